"""Sustained frames/s the simulated beamline publishes, received by an independent p4p client.

Prints one JSON object: for each frame size, frames/s published (the simulator asked to go
as fast as it can) and received, with the machine's CPU count. Run with
``.venv/bin/python benchmarks/bench_sim.py [--sizes 512 2048] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time

from tomostream.epics_env import apply_env, free_port, loopback_env

PORT = free_port()
apply_env(loopback_env(ca_ports=(PORT,)))

from p4p.client.thread import Context  # noqa: E402

from tomostream.sim import SimBeamline  # noqa: E402


def measure(size: int, seconds: float, fps: float, photons: float) -> dict:
    sim = SimBeamline(prefix=f"bench{size}:", plugin_prefix=f"bench{size}:P:", width=size, height=size,
                      fps=fps, ca_port=PORT, num_angles=10_000_000, photons=photons, inclusion="grow",
                      cache_mb=256)
    t0 = time.perf_counter()
    sim.start()
    sim._prepare(sim.theta[:720])
    prepare_s = time.perf_counter() - t0
    ctx = Context("pva", unwrap=False)
    received = []
    lock = threading.Lock()

    def cb(value):
        with lock:
            received.append(time.monotonic())

    sub = ctx.monitor(sim.image_channel, cb, request="record[queueSize=100]field()")
    time.sleep(1.0)
    sim.put("StartScan", "Acquire")
    time.sleep(2.0)                          # warm-up
    with lock:
        n0 = len(received)
    p0, t0 = sim.frames_published, time.monotonic()
    time.sleep(seconds)
    with lock:
        n1 = len(received)
    p1, t1 = sim.frames_published, time.monotonic()
    sim.abort()
    sub.close()
    ctx.close()
    sim.stop()
    return {"size": size, "dtype": "uint16", "asked_fps": fps, "photons": photons,
            "published_fps": round((p1 - p0) / (t1 - t0), 1),
            "received_fps": round((n1 - n0) / (t1 - t0), 1),
            "exact_cache": bool(sim.source.exact), "startup_prepare_s": round(prepare_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--fps", type=float, default=10_000.0, help="asked rate (max = as fast as it can)")
    ap.add_argument("--photons", type=float, default=2000.0)
    args = ap.parse_args()
    results = [measure(s, args.seconds, args.fps, args.photons) for s in args.sizes]
    print(json.dumps({"benchmark": "sim", "cpus": os.cpu_count(), "machine": platform.processor() or
                      platform.machine(), "results": results}, indent=1))


if __name__ == "__main__":
    main()
