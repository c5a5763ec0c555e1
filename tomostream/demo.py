"""``tomostream demo``: a simulated beamline, the stream server, a catalog and one stream scan.

Also home of :func:`simulated_beamline`, the in-process SimBeamline + StreamServer pair the
IPython profile and the notebook use when no real beamline is configured.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Search ports picked for this process's two CA servers, once.
_PORTS: tuple[int, int] | None = None


def loopback_ports() -> tuple[int, int]:
    """CA search ports for the simulator and the stream server, with the loopback environment.

    Chosen (and ``loopback_env`` applied) once per process, before any CA client is used;
    ``TOMOSTREAM_SIM_PORT`` / ``TOMOSTREAM_STREAM_PORT`` (or the test suite's variables) win
    when set.
    """
    global _PORTS
    if _PORTS is None:
        from .epics_env import apply_env, free_port, loopback_env

        sim = int(os.environ.get("TOMOSTREAM_SIM_PORT") or os.environ.get("TOMOSTREAM_TEST_SIM_PORT")
                  or free_port())
        stream = int(os.environ.get("TOMOSTREAM_STREAM_PORT")
                     or os.environ.get("TOMOSTREAM_TEST_STREAM_PORT") or free_port())
        apply_env(loopback_env(ca_ports=(sim, stream)))
        os.environ["TOMOSTREAM_SIM_PORT"], os.environ["TOMOSTREAM_STREAM_PORT"] = str(sim), str(stream)
        _PORTS = (sim, stream)
    return _PORTS


@dataclass
class SimulatedBeamline:
    """What :func:`simulated_beamline` started."""

    sim: object
    server: object
    tomoscan_prefix: str
    tomostream_prefix: str
    recon_channel: str
    capture_dir: Path


@contextlib.contextmanager
def simulated_beamline(root: str = "sim:", *, width: int = 128, height: int = 64, fps: float = 100.0,
                       step: float = 1.0, num_angles: int = 720, capture_dir: str | Path,
                       backend: str = "numpy", sim_port: int | None = None,
                       stream_port: int | None = None, **sim_options) -> Iterator[SimulatedBeamline]:
    """Run SimBeamline + StreamServer in this process, wired to each other.

    Parameters
    ----------
    root : str
        PV prefix root: TomoScan at ``<root>TomoScanStream:``, TomoStream at ``<root>TomoStream:``,
        detector at ``<root>Pva1:``.
    width, height : int [pixels]
        Frame size.
    fps : float [frames/s]
    step : float [degrees per frame]
    num_angles : int
        Frames per scan.
    capture_dir : path
        Where captures are written (FilePath).
    backend : str
        Reconstruction backend of the stream server.
    sim_port, stream_port : int, optional
        CA search ports; default :func:`loopback_ports`.
    **sim_options
        More SimBeamline options (``inclusion``, ``photons``...). The sample stages and optics
        are served under ``root`` too (:meth:`~tomostream.sim.stages.StageOptions.under`) and
        named in the TomoStream IOC unless ``stages`` is given.
    """
    from .server import StreamServer
    from .sim import SimBeamline
    from .sim.stages import StageOptions

    if sim_port is None or stream_port is None:
        sim_port, stream_port = loopback_ports()
    scan_prefix, stream_prefix = f"{root}TomoScanStream:", f"{root}TomoStream:"
    capture_dir = Path(capture_dir)
    capture_dir.mkdir(parents=True, exist_ok=True)
    stages = sim_options.pop("stages", None) or StageOptions.under(root)
    sim = SimBeamline(prefix=scan_prefix, plugin_prefix=f"{root}Pva1:", width=width, height=height,
                      fps=fps, step=step, num_angles=num_angles, ca_port=sim_port,
                      data_dir=capture_dir, stages=stages, **sim_options)
    recon = f"{stream_prefix}StreamRecon"
    server = StreamServer(stream_prefix, ca_port=stream_port, backend=backend,
                          tomoscan_prefix=scan_prefix, image_pvap_name=f"{scan_prefix}PvaPluginPVPrefix",
                          dark_pva_name=sim.dark_channel, flat_pva_name=sim.flat_channel,
                          theta_pva_name=sim.theta_channel, recon_pva_name=recon,
                          **stages.zoom_names())
    with sim, server:
        yield SimulatedBeamline(sim, server, scan_prefix, stream_prefix, recon, capture_dir)


def _progress(name: str, doc: dict) -> None:
    """Print one line per status reading and per capture."""
    if name == "start":
        print(f"run {doc['uid']} started")
    elif name == "event" and "tomostream_frames_used" in doc["data"]:
        data = doc["data"]
        recon_ms = 1e3 * data["tomostream_recon_time"]
        print(f"  frames used {data['tomostream_frames_used']:5d}  buffer {data['tomostream_buffer_size']:>9}"
              f"  recon {recon_ms:6.1f} ms  dropped {data['tomostream_frames_dropped']}"
              f"  lost {data['tomostream_frames_lost']}", flush=True)
    elif name == "event" and "captures_file" in doc["data"]:
        print(f"  capture -> {doc['data']['captures_file']}", flush=True)
    elif name == "stop":
        print(f"run finished: {doc['exit_status']} {doc.get('reason', '')}".rstrip())


def _parser() -> argparse.ArgumentParser:
    from .recon.backend import BACKENDS

    parser = argparse.ArgumentParser(
        prog="tomostream demo",
        description="Simulated beamline + stream server + embedded catalog, then "
                    "RE(stream_scan(..., capture_when=ChangeDetector(...))) on a sample that changes.")
    parser.add_argument("--out", default="demo-output", help="folder for the PNG, captures and catalog")
    parser.add_argument("--width", type=int, default=256, help="frame width [pixels]")
    parser.add_argument("--height", type=int, default=256, help="frame height [pixels]")
    parser.add_argument("--fps", type=float, default=100.0, help="frame rate [frames/s]")
    parser.add_argument("--angles", type=int, default=1440, help="frames in the scan")
    parser.add_argument("--step", type=float, default=0.5, help="rotation step [degrees/frame]")
    parser.add_argument("--threshold", type=float, default=0.02,
                        help="relative change of the slices that triggers a capture")
    parser.add_argument("--num-capture", type=int, default=60, help="frames saved after the trigger")
    parser.add_argument("--pre-count", type=int, default=30, help="frames saved from before the trigger")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--prefix", default="demo:", help="PV prefix root of the simulated beamline")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo; return the exit status (0 when the run succeeded)."""
    args = _parser().parse_args(argv)
    loopback_ports()  # before any Channel Access client is imported or used
    import matplotlib

    matplotlib.use("Agg")
    from bluesky import RunEngine

    from .devices import TomoScanStream, TomoStream, destroy_devices
    from .io import catalog as cat
    from .liveview import LiveView
    from .plans import ChangeDetector, stream_scan

    out = Path(args.out).resolve()
    data_dir = out / "catalog"
    t0 = time.monotonic()
    catalog = cat.open_catalog(data_dir=data_dir)
    print(f"catalog: embedded Tiled server, data in {data_dir}")
    with simulated_beamline(args.prefix, width=args.width, height=args.height, fps=args.fps, step=args.step,
                            num_angles=args.angles, capture_dir=cat.capture_dir(data_dir),
                            backend=args.backend) as bl:
        print(f"reconstruction on PVA channel {bl.recon_channel!r} "
              f"(ImageJ: Plugins > EPICS_areaDetector > EPICS NTNDA Viewer, channel {bl.recon_channel})")
        tomoscan = TomoScanStream(bl.tomoscan_prefix, name="tomoscan")
        tomostream = TomoStream(bl.tomostream_prefix, name="tomostream")
        try:
            tomoscan.wait_for_connection(timeout=10)
            tomostream.wait_for_connection(timeout=10)
            print(f"beamline and stream server started in {time.monotonic() - t0:.1f} s "
                  f"(reconstruction kernels compiled before the scan, so no frame waits for them)")
            RE = RunEngine({})
            RE.subscribe(cat.catalog_writer(catalog, cat.spool_dir(data_dir)))
            RE.subscribe(_progress)
            trigger = ChangeDetector(threshold=args.threshold, holdoff=3.0)
            md = {"purpose": "tomostream demo", "sample": "disc with a growing inclusion"}
            (uid,) = RE(stream_scan(tomoscan, tomostream, capture_when=trigger, num_capture=args.num_capture,
                                    pre_count=args.pre_count, max_captures=2, poll_period=0.5,
                                    snapshot_dir=cat.snapshot_dir(data_dir), md=md))
            view = LiveView(ortho=(args.width // 2, args.width // 2, args.height // 2))
            view.show(tomostream.recon.get())
            png = view.save(out / "final_slices.png")
        finally:
            destroy_devices(tomostream, tomoscan)
    run = catalog[uid]
    files = []
    if "captures" in run:
        files = [str(f) for f in run["captures"].read()["captures_file"].values]
    print(f"\nrun uid:        {uid}  ({run.metadata['stop']['exit_status']})")
    print(f"captures:       {', '.join(files) if files else 'none (the trigger did not fire)'}")
    print(f"PVA channel:    {bl.recon_channel} (while a beamline runs)")
    print(f"final slices:   {png}")
    print(f"catalog:        open_catalog(data_dir={str(data_dir)!r})[{uid[:8]!r}]")
    print(f"total time:     {time.monotonic() - t0:.1f} s")
    cat.close_catalog(data_dir)
    return 0 if run.metadata["stop"]["exit_status"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
