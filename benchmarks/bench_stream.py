"""Sustained frame rate of the whole chain: simulated detector -> stream server -> slices.

The simulated beamline runs as deployed, in its own process (``tomostream sim``, continuous
scan); the stream server runs in this process, as ``tomostream serve`` would. For each frame
size the detector rate is raised step by step (ExposureTime over Channel Access) and, after a
settling second, the server's counters are read over a measuring window. A step passes when no
frame was dropped or lost and the server used (pushed into the reconstruction) at least 95 % of
the frames offered. Reported: the highest passing rate (frames/s and MB/s of raw frames) and
the latency from a frame's timestamp to the publication of the slices that contain it
(p50/p99), including the server's ``frame_type_window`` hold, and the share of it spent before
a frame reaches the server's worker (``arrival``), and of that the share before the server's
image subscriber has decoded it (``receive``: detector, network and PV Access; the rest is
waiting for the worker). Prints one JSON object::

    .venv/bin/python benchmarks/bench_stream.py [--sizes 512 1024] [--backend numpy]
    .venv/bin/python benchmarks/bench_stream.py --sizes 2048 --backend cupy --start-rate 100

``--receive-in-server`` receives the frames in the server's process instead of a child
process (:mod:`tomostream.pva.receive_process`), for comparison. ``--image-plugins N`` has the
simulated detector spread its frames over N channels in turn, as an NDPluginScatter in front
of N NDPluginPva plugins does, and the server receive each over a connection of its own
(:mod:`tomostream.pva.scatter`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from tomostream.epics_env import apply_env, free_port, loopback_env

SIM_PORT, STREAM_PORT = free_port(), free_port()
apply_env(loopback_env(ca_ports=(SIM_PORT, STREAM_PORT)))

import epics  # noqa: E402

from tomostream.recon.backend import BACKENDS  # noqa: E402
from tomostream.server import StreamServer  # noqa: E402
from tomostream.server.stream_server import FRAME_TYPE_WINDOW  # noqa: E402
from tomostream.sim.cli import spawn  # noqa: E402


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(0.2)


def snapshot(srv: StreamServer) -> dict:
    image = srv.image_stream
    overflow = image.counters.get("overflow", 0) if image is not None else 0
    return {**srv.counters, "overflow": overflow, "t": time.monotonic(), "latency_index": srv.latency.count,
            "arrival_index": srv.arrival.count, "receive_index": srv.receive.count}


def measure_step(srv: StreamServer, sim_prefix: str, rate: float, settle: float, seconds: float,
                 frame_mb: float) -> dict:
    epics.caput(sim_prefix + "ExposureTime", 1.0 / rate, wait=True, timeout=10.0)
    time.sleep(settle)
    a = snapshot(srv)
    time.sleep(seconds)
    b = snapshot(srv)
    dt = b["t"] - a["t"]

    def delta(key: str) -> int:
        return b[key] - a[key]

    lat = srv.latency.percentiles(a["latency_index"], b["latency_index"])
    arr = srv.arrival.percentiles(a["arrival_index"], b["arrival_index"])
    rcv = srv.receive.percentiles(a["receive_index"], b["receive_index"])
    offered = (delta("FramesReceived") + delta("FramesLost")) / dt
    used = delta("FramesUsed") / dt
    step = {
        "requested_fps": round(rate, 1), "offered_fps": round(offered, 1), "used_fps": round(used, 1),
        "used_MBps": round(used * frame_mb, 1), "dropped": delta("FramesDropped"),
        "lost": delta("FramesLost"), "lost_in_server": delta("overflow"), "bad": delta("FramesBad"),
        "latency_p50_s": round(lat["p50"], 4) if lat else None,
        "latency_p99_s": round(lat["p99"], 4) if lat else None,
        "arrival_p50_s": round(arr["p50"], 4) if arr else None,
        "arrival_p99_s": round(arr["p99"], 4) if arr else None,
        "receive_p50_s": round(rcv["p50"], 4) if rcv else None,
        "receive_p99_s": round(rcv["p99"], 4) if rcv else None,
    }
    step["ok"] = step["dropped"] == 0 and step["lost"] == 0 and used >= 0.95 * offered > 0
    return step


def run_size(size: int, args) -> dict:
    sim_prefix, srv_prefix = f"bs{size}S:", f"bs{size}T:"
    sim = spawn(["--prefix", sim_prefix, "--plugin-prefix", f"bs{size}P:", "--size", str(size),
                 "--fps", str(args.start_rate), "--step", str(args.step),
                 "--num-angles", str(args.num_angles), "--inclusion", "none", "--photons", "0",
                 "--cache-mb", str(args.cache_mb), "--ca-port", str(SIM_PORT), "--start-scan",
                 "--image-plugins", str(args.image_plugins)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = StreamServer(srv_prefix, ca_port=STREAM_PORT, backend=args.backend,
                       tomoscan_prefix=sim_prefix, image_pvap_name=sim_prefix + "PvaPluginPVPrefix",
                       dark_pva_name=sim_prefix + "StreamDarkFields",
                       flat_pva_name=sim_prefix + "StreamFlatFields",
                       theta_pva_name=sim_prefix + "StreamTheta", recon_pva_name=srv_prefix + "Recon",
                       frame_type_window=args.frame_type_window,
                       max_rate=args.publish_rate,
                       receive_process=not args.receive_in_server,
                       image_plugins=args.image_plugins).start()
    buffer = int(round(180.0 / args.step))
    frame_mb = size * size * 2 / 1e6
    result = {"size": size, "buffer_frames": buffer, "frame_MB": frame_mb, "steps": []}
    try:
        t0 = time.monotonic()
        epics.caput(srv_prefix + "StartRecon", 1, wait=False)
        wait_for(lambda: srv.ready, 120.0, "server connected to the simulator")
        wait_for(lambda: srv.counters.get("FramesUsed", 0) > buffer, 600.0, "a full buffer")
        result["startup_s"] = round(time.monotonic() - t0, 1)
        result["backend"] = srv.reconstructor.backend
        rate = args.start_rate
        while rate <= args.max_rate:
            step = measure_step(srv, sim_prefix, rate, args.settle, args.seconds, frame_mb)
            result["steps"].append(step)
            print(json.dumps({"size": size, **step}), file=sys.stderr)
            if not step["ok"]:
                break
            if step["offered_fps"] < 0.9 * rate:   # the simulator cannot go faster
                result["limit"] = "simulator"
                break
            rate *= args.factor
        else:
            result["limit"] = "max-rate"
        passed = [s for s in result["steps"] if s["ok"]]
        result.setdefault("limit", "server" if passed and passed != result["steps"] else "none passed")
        if passed:
            best = max(passed, key=lambda s: s["used_fps"])
            result.update(sustained_fps=best["used_fps"], sustained_MBps=best["used_MBps"],
                          latency_p50_s=best["latency_p50_s"], latency_p99_s=best["latency_p99_s"])
        result["recon_time_s"] = epics.caget(srv_prefix + "ReconTime", timeout=5.0)
    finally:
        epics.caput(srv_prefix + "AbortRecon", 1, wait=True, timeout=10.0)
        srv.stop()
        sim.terminate()
        sim.wait(30)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--backend", default="numpy", choices=BACKENDS)
    parser.add_argument("--step", type=float, default=0.5, help="degrees per frame [%(default)s]")
    parser.add_argument("--start-rate", type=float, default=20.0, help="first frames/s tried")
    parser.add_argument("--max-rate", type=float, default=5000.0)
    parser.add_argument("--factor", type=float, default=1.25, help="rate step factor")
    parser.add_argument("--settle", type=float, default=1.5, help="seconds before measuring")
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring window [s]")
    parser.add_argument("--num-angles", type=int, default=200000,
                        help="frames in the simulated scan (its theta table) [%(default)s]")
    parser.add_argument("--cache-mb", type=float, default=512.0, help="simulator frame cache")
    parser.add_argument("--frame-type-window", type=float, default=FRAME_TYPE_WINDOW,
                        help="server hold before frames are used [s]")
    parser.add_argument("--publish-rate", type=float, default=30.0,
                        help="most published updates of the slices per second [%(default)s]")
    parser.add_argument("--receive-in-server", action="store_true",
                        help="receive the frames in the server's process, not a child process")
    parser.add_argument("--image-plugins", type=int, default=1,
                        help="PVA channels the simulated detector spreads its frames over, in "
                             "turn, as an NDPluginScatter does; one connection each [%(default)s]")
    args = parser.parse_args(argv)
    results = {
        "benchmark": "stream", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "backend": args.backend,
        "step_deg": args.step, "frame_type_window_s": args.frame_type_window,
        "publish_rate_max": args.publish_rate, "receive_process": not args.receive_in_server,
        "image_plugins": args.image_plugins,
        "sizes": [run_size(size, args) for size in args.sizes],
    }
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
