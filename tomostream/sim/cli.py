"""``tomostream sim``: run the simulated TomoScan streaming beamline until Ctrl-C.

Example, simulator and stream server side by side on one host, all on loopback (each
Channel Access server needs its own search port, and clients must list both; PV Access
servers bound to 127.0.0.1 find each other)::

    export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST="127.0.0.1:5064 127.0.0.1:5066"
    export EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_ADDR_LIST=127.0.0.1
    EPICS_CA_SERVER_PORT=5064 tomostream sim &
    EPICS_CA_SERVER_PORT=5066 tomostream serve --interfaces 127.0.0.1

Then ``caproto-put 2bmb:TomoScanStream:StartScan 1`` starts a scan; the images stream on
``<plugin prefix>Image`` (PV Access), dark/flat/theta on ``<prefix>StreamDarkFields``,
``StreamFlatFields`` and ``StreamTheta``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from ..childproc import STOP_GRACE, exit_within, popen_with_parent
from ..epics_env import apply_env, ca_server_port, serving_report
from ..errors import TomostreamError
from ..ioc.access import LOOPBACK, bind_env, server_interfaces, split_hosts
from .beamline import SimBeamline
from .ioc import TomoScanStreamIOC
from .stages import add_stage_arguments, stage_options


def spawn(args: Sequence[str], **popen) -> subprocess.Popen:
    """Run ``tomostream sim <args>`` in a child process that ends when this process does.

    On Linux the child asks for SIGTERM when its parent dies, so a benchmark that crashes
    leaves no simulator behind to keep serving its channels (and to mislead the next run).
    ``popen`` goes to :class:`subprocess.Popen`.
    """
    return popen_with_parent([sys.executable, "-m", "tomostream.sim.cli", *args], **popen)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tomostream sim", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[0] + "\n\n" + (TomoScanStreamIOC.__doc__ or ""),
        epilog=("The CA search port is --ca-port, else EPICS_CA_SERVER_PORT, else 5064; the PVA\n"
                "search port EPICS_PVAS_BROADCAST_PORT, else 5076. At start-up the simulator\n"
                "prints where it serves and what a client must export to find it.\n\n"
                "Running sim and server side by side on one host: give each its own CA port,\n"
                "list both in EPICS_CA_ADDR_LIST, and keep PV Access on loopback too:\n"
                "  export EPICS_CA_AUTO_ADDR_LIST=NO EPICS_CA_ADDR_LIST='127.0.0.1:5064 127.0.0.1:5066'\n"
                "  export EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_ADDR_LIST=127.0.0.1\n"
                "  EPICS_CA_SERVER_PORT=5064 tomostream sim &\n"
                "  EPICS_CA_SERVER_PORT=5066 tomostream serve --interfaces 127.0.0.1"))
    p.add_argument("--prefix", default="2bmb:TomoScanStream:", help="TomoScan PV prefix")
    p.add_argument("--plugin-prefix", default="2bmSP1:Pva1:",
                   help="detector PVA plugin prefix (images on <prefix>Image)")
    p.add_argument("--image-plugins", type=int, default=1,
                   help="NDPluginPva plugins the frames are spread over, in turn, as by an "
                        "NDPluginScatter (prefixes counted up from --plugin-prefix); set "
                        "TomoStream's ImagePlugins to match [%(default)s]")
    p.add_argument("--pva-prefix", default=None,
                   help="prefix of StreamDarkFields/StreamFlatFields/StreamTheta (default: --prefix)")
    p.add_argument("--size", type=int, default=512, help="frame width and height [pixels]")
    p.add_argument("--height", type=int, default=None, help="frame height if not square [pixels]")
    p.add_argument("--fps", type=float, default=200.0, help="frame rate [frames/s]")
    p.add_argument("--step", type=float, default=0.5, help="RotationStep [degrees per frame]")
    p.add_argument("--num-angles", type=int, default=36000, help="NumAngles: frames per scan")
    p.add_argument("--scan-type", choices=("continuous", "backforth"), default="continuous")
    p.add_argument("--dtype", choices=("uint16", "uint8", "float32"), default="uint16")
    p.add_argument("--photons", type=float, default=2000.0, help="photons per pixel (0 = noiseless)")
    p.add_argument("--zingers", type=float, default=0.0, help="fraction of pixels hit per frame")
    p.add_argument("--center", type=float, default=None,
                   help="detector column of the rotation axis (the Center the reconstruction needs); "
                        "any column keeping the sample in the field [pixels, default size/2]")
    p.add_argument("--column-errors", type=float, default=0.0, metavar="FRACTION",
                   help="miscalibrated detector: this fraction of the columns (0.05 = 5%%; "
                        "the same columns every run) have a gain error of 2-10%% in the "
                        "projections that the flat field does not see, so the slices show "
                        "rings [%(default)s]")
    p.add_argument("--inclusion", choices=("grow", "move", "none"), default="grow",
                   help="part of the sample that changes during the scan")
    p.add_argument("--first-projid", type=int, default=1, help="uniqueId of the first frame")
    p.add_argument("--wrap-unique-id", action="store_true", help="wrap uniqueId at 65535")
    p.add_argument("--data-dir", default=None, help="initial FilePath for captures")
    p.add_argument("--cache-mb", type=float, default=512.0, help="memory for cached frames [MiB]")
    p.add_argument("--ca-port", type=int, default=None,
                   help="CA search port (default: EPICS_CA_SERVER_PORT or 5064)")
    p.add_argument("--interfaces", default=None,
                   help="addresses the CA and PVA servers bind [EPICS_CAS_INTF_ADDR_LIST, else 127.0.0.1]")
    p.add_argument("--write-hosts", default=None,
                   help="hosts (names or IP addresses, comma or space separated) allowed to write "
                        "the TomoScan PVs; reads stay open [any host]")
    p.add_argument("--start-scan", action="store_true", help="start a scan right away")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    add_stage_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGINT / SIGTERM; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    port = ca_server_port(args.ca_port)
    stop = threading.Event()
    try:
        interfaces = server_interfaces(args.interfaces, default=LOOPBACK)
        apply_env(bind_env(interfaces))  # before pvapy's server reads it
        sim = SimBeamline(prefix=args.prefix, plugin_prefix=args.plugin_prefix, pva_prefix=args.pva_prefix,
                          width=args.size, height=args.height or args.size, fps=args.fps, step=args.step,
                          ca_port=port, data_dir=args.data_dir, num_angles=args.num_angles,
                          scan_type=args.scan_type, dtype=args.dtype, photons=args.photons,
                          zingers=args.zingers, center=args.center,
                          inclusion=args.inclusion, first_projid=args.first_projid,
                          wrap_unique_id=args.wrap_unique_id, cache_mb=args.cache_mb,
                          interfaces=interfaces, write_hosts=split_hosts(args.write_hosts) or None,
                          image_plugins=args.image_plugins, column_errors=args.column_errors,
                          stages=stage_options(args))
        sim.start()
    except (TomostreamError, OSError) as exc:
        print(f"tomostream sim: {exc}", file=sys.stderr)
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(serving_report("tomostream sim", interfaces=interfaces, ca_port=port, ca_pvs=args.prefix + "*",
                         pva_channels=[*sim.image_channels, sim.dark_channel, sim.flat_channel,
                                       sim.theta_channel]), flush=True)
    print("tomostream sim: running; Ctrl-C stops", flush=True)
    try:
        if args.start_scan:
            sim.put("StartScan", "Acquire")
        while not stop.wait(0.5):
            pass
    finally:
        exit_within(STOP_GRACE, "tomostream sim")
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
