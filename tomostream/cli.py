"""Command line: ``tomostream demo | serve | sim | bench``.

Each sub-command lives with the part of the product it runs and takes its own options
(``tomostream sim --help``); this module only dispatches, importing nothing heavy until a
sub-command is chosen.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("tomostream.demo", "simulated beamline + stream server + catalog + RE(stream_scan(...))"),
    "serve": ("tomostream.server", "run the stream server and its TomoStream IOC"),
    "sim": ("tomostream.sim.cli", "run the simulated TomoScan streaming beamline"),
    "bench": ("tomostream.recon.bench", "measure the reconstruction engine on this machine"),
}


def _usage() -> str:
    lines = ["usage: tomostream {" + ",".join(COMMANDS) + "} [options]", ""]
    lines += [f"  {name:<6} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'tomostream <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tomostream: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
