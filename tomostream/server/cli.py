"""``tomostream serve``: the stream server from the shell, until Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from ..childproc import STOP_GRACE, exit_within
from ..epics_env import apply_env, ca_server_port, serving_report
from ..errors import TomostreamError
from ..io.catalog import default_data_dir
from ..ioc.access import ALL_INTERFACES, WriteAllowList, bind_env, server_interfaces, split_hosts
from ..ioc.autosave import autosave_path
from ..ioc.tomostream_ioc import ZOOM_NAMES, TomoStreamIOC
from ..recon.backend import BACKENDS
from .stream_server import StreamServer

log = logging.getLogger(__name__)

TOMOSCAN_PREFIX = "2bmb:TomoScanStream:"
#: Name options: (option, PV suffix, default shown in the help; <tomoscan>: TomoScanPVPrefix).
NAME_OPTIONS = (
    ("--image-pvap-name", "ImagePVAPName", "<tomoscan>PvaPluginPVPrefix"),
    ("--dark-pva-name", "DarkPVAName", "<tomoscan>StreamDarkFields"),
    ("--flat-pva-name", "FlatPVAName", "<tomoscan>StreamFlatFields"),
    ("--theta-pva-name", "ThetaPVAName", "<tomoscan>StreamTheta"),
    ("--recon-pva-name", "ReconPVAName", "<prefix>StreamRecon"),
    *((option, suffix, ZOOM_NAMES[suffix]) for option, suffix in (
        ("--mct-optics-pv-prefix", "MctOpticsPVPrefix"),
        ("--sample-tomo0deg-pv-name", "SampleTomo0degPVName"),
        ("--sample-tomo90deg-pv-name", "SampleTomo90degPVName"),
        ("--sample-y-pv-name", "SampleYPVName"))),
)


def _names(args) -> tuple[dict, dict]:
    """Start-up values of the name PVs, by suffix: (defaults, given on the command line).

    Names left out follow TomoScanPVPrefix; when that is given, they count as given too.
    """
    tomoscan = args.tomoscan_prefix or TOMOSCAN_PREFIX
    defaults = {"TomoScanPVPrefix": tomoscan, "ImagePlugins": 1}
    defaults.update({suffix: template.replace("<tomoscan>", tomoscan).replace("<prefix>", args.prefix)
                     for _, suffix, template in NAME_OPTIONS})
    given = {"TomoScanPVPrefix": args.tomoscan_prefix, "ImagePlugins": args.image_plugins}
    given.update({suffix: getattr(args, option[2:].replace("-", "_"))
                  for option, suffix, _ in NAME_OPTIONS})
    if args.tomoscan_prefix is not None:      # the names that follow it come with it
        given.update({suffix: defaults[suffix] for _, suffix, template in NAME_OPTIONS
                      if template.startswith("<tomoscan>") and given[suffix] is None})
    return defaults, {k: v for k, v in given.items() if v is not None}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tomostream serve",
        description="Serve the TomoStream IOC and reconstruct three orthogonal slices of a "
                    "TomoScan stream in real time; the slices are served over PV Access "
                    "(ReconPVAName) for ImageJ's EPICS_NTNDA_Viewer or any PVA client.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "EPICS environment:\n"
            "  The IOC serves Channel Access, and the slices PV Access, on --interfaces\n"
            "  (default EPICS_CAS_INTF_ADDR_LIST, else all interfaces) and search port --ca-port\n"
            "  (EPICS_CA_SERVER_PORT, default 5064). --write-hosts limits who may write the\n"
            "  TomoStream PVs (by client IP address); every host may still read them. The\n"
            "  server is also a CA client of the TomoScan IOC and a PVA client of the detector:\n"
            "  EPICS_CA_ADDR_LIST / EPICS_PVA_ADDR_LIST must reach them.\n\n"
            "  At start-up the server prints where it serves and what a client must export.\n"
            "  PV Access bound to all interfaces leaves loopback out: a client limited to\n"
            "  127.0.0.1 finds the slices only with --interfaces 127.0.0.1.\n\n"
            "Beside the simulated beamline on one host, all on loopback (two CA servers need\n"
            "two ports):\n"
            "  export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST='127.0.0.1:5064 127.0.0.1:5066'\n"
            "  export EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_ADDR_LIST=127.0.0.1\n"
            "  EPICS_CA_SERVER_PORT=5064 tomostream sim &\n"
            "  EPICS_CA_SERVER_PORT=5066 tomostream serve --interfaces 127.0.0.1\n"
            "  caproto-put 2bmb:TomoStream:StartRecon 1; caproto-put 2bmb:TomoScanStream:StartScan 1\n\n"
            + (TomoStreamIOC.__doc__ or "")
        ),
    )
    parser.add_argument("--prefix", default="2bmb:TomoStream:", help="IOC PV prefix [%(default)s]")
    parser.add_argument("--ca-port", type=int, default=0,
                        help="CA search port of the IOC (0: EPICS_CA_SERVER_PORT or 5064)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="reconstruction backend [%(default)s]")
    names = parser.add_argument_group(
        "channel names", "start-up values of the name PVs; given here they win over the autosave "
                         "file, left out the file's values (else the defaults shown) are used")
    names.add_argument("--tomoscan-prefix", default=None,
                       help=f"TomoScanPVPrefix [{TOMOSCAN_PREFIX}]")
    for option, suffix, default in NAME_OPTIONS:
        names.add_argument(option, default=None, help=f"{suffix} [{default}]")
    names.add_argument("--image-plugins", type=int, default=None,
                       help="ImagePlugins: NDPluginPva plugins the detector's frames are spread "
                            "over by an NDPluginScatter [1]")
    save = parser.add_mutually_exclusive_group()
    save.add_argument("--autosave", default=None, metavar="PATH",
                      help="file the settings are restored from at start and saved to on change "
                           "[$TOMOSTREAM_DATA_DIR or ~/.local/share/tomostream, then "
                           "autosave/<prefix>.sav]")
    save.add_argument("--no-autosave", action="store_true",
                      help="neither restore nor save the settings")
    parser.add_argument("--max-rate", type=float, default=30.0,
                        help="most published updates per second [%(default)s]")
    parser.add_argument("--interfaces", default=None,
                        help="addresses the CA and PVA servers bind, e.g. '127.0.0.1' or "
                             "'10.0.0.5 127.0.0.1' [EPICS_CAS_INTF_ADDR_LIST, else 0.0.0.0]")
    parser.add_argument("--write-hosts", default=None,
                        help="hosts (names or IP addresses, comma or space separated) allowed to "
                             "write the TomoStream PVs; reads stay open [any host]")
    parser.add_argument("--log-level", default="INFO", help="logging level [%(default)s]")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``tomostream serve``: run the stream server until Ctrl-C (SIGINT) or SIGTERM."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    defaults, given = _names(args)
    autosave = None
    if not args.no_autosave:
        autosave = args.autosave or autosave_path(default_data_dir(), args.prefix)
    try:
        interfaces = server_interfaces(args.interfaces, default=ALL_INTERFACES)
        write_hosts = split_hosts(args.write_hosts) or None
        if write_hosts:
            WriteAllowList(write_hosts)  # names that do not resolve are refused here
    except TomostreamError as exc:
        print(f"tomostream serve: {exc}", file=sys.stderr)
        return 2
    apply_env(bind_env(interfaces))  # before pvapy's server reads it
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with StreamServer(args.prefix, ca_port=args.ca_port, backend=args.backend,
                      max_rate=args.max_rate, interfaces=interfaces, write_hosts=write_hosts,
                      autosave=autosave, overrides=given, **defaults) as server:
        print(serving_report("tomostream serve", interfaces=interfaces,
                             ca_port=ca_server_port(args.ca_port), ca_pvs=args.prefix + "*",
                             pva_channels=[str(server.ioc.value("ReconPVAName"))]), flush=True)
        log.info("TomoStream IOC %s serving; Ctrl-C stops", server.prefix)
        while not done.wait(3600):
            pass
        exit_within(STOP_GRACE, "tomostream serve")
    return 0


if __name__ == "__main__":
    sys.exit(main())
