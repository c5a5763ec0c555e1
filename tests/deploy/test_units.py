"""deploy/: each systemd unit starts a command that exists, with options it takes, from the
variables its environment file sets; the catalog configuration uses only variables of its file."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_servers import REPO, TILED_CONFIG

DEPLOY = REPO / "deploy" / "systemd"
BIN = Path(sys.executable).parent
#: unit -> its environment file, and how many words name the command (program + sub-commands)
UNITS = {"tomostream-serve.service": ("serve.env", 2), "tomostream-catalog.service": ("catalog.env", 3),
         "tomostream-queueserver.service": ("queueserver.env", 1)}
VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a systemd environment file (comments and blank lines left out)."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            pairs[key] = value
    return pairs


def unit_setting(path: Path, key: str) -> str:
    (line,) = [line for line in path.read_text().splitlines() if line.startswith(key + "=")]
    return line.split("=", 1)[1]


def expand(command: str, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd runs it: ``${VAR}`` one word, a lone ``$VAR`` split at whitespace."""
    argv = []
    for word in shlex.split(command):
        lone = re.fullmatch(r"\$(\w+)", word)
        if lone:
            argv += env[lone.group(1)].split()
        else:
            argv.append(VAR.sub(lambda m: env[m.group(1) or m.group(2)], word))
    return argv


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_a_unit_runs_an_installed_command_with_options_it_takes(unit):
    env_name, words = UNITS[unit]
    env = env_file(DEPLOY / env_name)
    assert unit_setting(DEPLOY / unit, "EnvironmentFile") == f"/etc/tomostream/{env_name}"
    command = unit_setting(DEPLOY / unit, "ExecStart")
    missing = {m.group(1) or m.group(2) for m in VAR.finditer(command)} - set(env)
    assert not missing, f"{unit} uses {missing}, which {env_name} does not set"
    argv = expand(command, env)
    assert argv[0].startswith("/opt/tomostream/.venv/bin/")
    program = BIN / Path(argv[0]).name                       # the same program in this checkout
    assert program.exists(), f"{unit}: {program.name} is not installed by pip install -e '.[test]'"
    usage = subprocess.run([str(program), *argv[1:words], "--help"], capture_output=True, text=True,
                           timeout=120, env={"COLUMNS": "200", "PATH": str(BIN)})
    assert usage.returncode == 0, usage.stderr
    for option in (a for a in argv[words:] if a.startswith("--")):
        assert option in usage.stdout, f"{unit}: {' '.join(argv[:words])} has no option {option}"


def test_the_stream_server_takes_the_example_arguments():
    from tomostream.server.cli import _parser

    env = env_file(DEPLOY / "serve.env")
    argv = expand(unit_setting(DEPLOY / "tomostream-serve.service", "ExecStart"), env)
    args = _parser().parse_args(argv[2:])
    assert (args.prefix, args.interfaces, args.backend) == ("2bmb:TomoStream:", "192.0.2.20", "cupy")


def test_the_catalog_configuration_takes_its_variables_from_catalog_env(monkeypatch):
    from tiled.config import parse_configs

    env = env_file(DEPLOY / "catalog.env")
    used = {m.group(1) or m.group(2) for m in VAR.finditer(TILED_CONFIG.read_text())}
    assert used and used <= set(env), f"config.yml uses {used - set(env)}, which catalog.env does not set"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = parse_configs(TILED_CONFIG)                      # Tiled's own schema
    assert config.authentication.single_user_api_key == env["TILED_API_KEY"]
    (tree,) = config.trees
    assert tree.args["uri"].startswith("postgresql+asyncpg://")
    assert env["TOMOSTREAM_CAPTURE_DIR"] in tree.args["readable_storage"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_accepts_the_units(tmp_path):
    """``systemd-analyze verify`` on the units, pointed at this checkout's programs and files."""
    for unit in UNITS:
        text = (DEPLOY / unit).read_text().replace("/opt/tomostream/.venv/bin/", f"{BIN}/")
        (tmp_path / unit).write_text(text.replace("/etc/tomostream/", f"{DEPLOY}/"))
    units = sorted(str(p) for p in tmp_path.iterdir())
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
