"""Sustained frames/s the simulated beamline streams, received by an independent p4p client.

The simulator runs as it would at a beamline, in its own process (``tomostream sim
--start-scan``, asked for 10,000 frames/s, i.e. as fast as it can); this process receives the
images with p4p and counts frames and uniqueId gaps over a few seconds after a warm-up.
Prints one JSON object. Usage::

    .venv/bin/python benchmarks/bench_sim.py [--sizes 512 2048] [--seconds 5] [--photons 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import threading
import time

from tomostream.epics_env import apply_env, free_port, loopback_env

PORT = free_port()
apply_env(loopback_env(ca_ports=(PORT,)))

from p4p.client.thread import Context  # noqa: E402

from tomostream.sim.cli import spawn  # noqa: E402


def measure(size: int, seconds: float, photons: float, cache_mb: float) -> dict:
    prefix = f"bench{size}:"
    channel = prefix + "P:Image"
    t_start = time.monotonic()
    proc = spawn(["--prefix", prefix, "--plugin-prefix", prefix + "P:", "--size", str(size),
                  "--fps", "10000", "--num-angles", "10000000", "--photons", str(photons),
                  "--cache-mb", str(cache_mb), "--start-scan"],
                 env=dict(os.environ, EPICS_CA_SERVER_PORT=str(PORT)),
                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ctx = Context("pva", unwrap=False)
    ids: list[int] = []
    lock = threading.Lock()

    def cb(value):
        if not isinstance(value, Exception):
            with lock:
                ids.append(int(value.uniqueId))

    sub = ctx.monitor(channel, cb, request="record[queueSize=100]field()")
    try:
        while True:                          # wait for the scan to stream (cache filled)
            with lock:
                if len(ids) > 20:
                    break
            if time.monotonic() - t_start > 300 or proc.poll() is not None:
                raise RuntimeError(f"simulator at {size}^2 did not stream")
            time.sleep(0.1)
        startup_s = time.monotonic() - t_start
        time.sleep(2.0)
        with lock:
            n0 = len(ids)
        t0 = time.monotonic()
        time.sleep(seconds)
        with lock:
            window = ids[n0:]
        t1 = time.monotonic()
    finally:
        sub.close()
        ctx.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    span = (window[-1] - window[0] + 1) if window else 0
    return {"size": size, "dtype": "uint16", "photons": photons, "cache_mb": cache_mb,
            "received_fps": round(len(window) / (t1 - t0), 1),
            "published_fps": round(span / (t1 - t0), 1),
            "lost_in_window": span - len(window), "startup_s": round(startup_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--photons", type=float, default=2000.0)
    ap.add_argument("--cache-mb", type=float, default=512.0)
    args = ap.parse_args()
    results = [measure(s, args.seconds, args.photons, args.cache_mb) for s in args.sizes]
    print(json.dumps({"benchmark": "sim", "cpus": os.cpu_count(),
                      "machine": f"{platform.machine()} {platform.system()}", "results": results}, indent=1))


if __name__ == "__main__":
    main()
