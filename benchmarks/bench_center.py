"""Benchmark of the rotation-axis estimate (CenterEstimate); prints JSON (docs/benchmarks.md).

For each size the simulator's uint16 frames (noise at 2000 photons/pixel, no inclusion) of a
half turn and a little more fill an :class:`~tomostream.recon.OrthoReconstructor`, once per
true axis column; the estimate's error and its time (median and best of ``--repeats`` calls,
what the stream server's worker spends per refresh) are reported.

Usage: ``python benchmarks/bench_center.py [--backend numpy] [--size 128 180] [--size 2048 60]``
(size and projections per 180 degrees; both by default).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time

import numpy as np

from tomostream.recon import OrthoReconstructor
from tomostream.recon.backend import BACKENDS
from tomostream.recon.phantom import default_phantom, reach
from tomostream.sim.detector import DetectorOptions, FrameSource


def true_centers(n: int) -> list[float]:
    """The middle, and off-centre columns 3/4 of the way to either end of what the sample allows."""
    room = n / 2 - reach(default_phantom(n))
    return [n / 2, round(n / 2 - 0.75 * room, 2), round(n / 2 + 0.6 * room, 2)]


def measure(n: int, projections: int, center: float, backend: str, repeats: int) -> dict:
    """Error and time of the estimate for one true ``center`` [pixels] of an ``n``^2 detector."""
    step = 180.0 / projections
    angles = 37.0 + np.arange(projections + projections // 10) * step     # a little past 180
    src = FrameSource(DetectorOptions(width=n, height=n, photons=2000.0, center=center,
                                      inclusion=None, cache_mb=2 * angles.size * n * n * 2 / 2**20))
    src.prepare(angles)
    rec = OrthoReconstructor(n, n, projections, backend=backend)
    rec.set_dark(src.dark_frame())
    rec.set_flat(src.flat_frame())
    for start in range(0, angles.size, 8):
        chunk = angles[start:start + 8]
        rec.push(np.stack([src.projection(a, start + i) for i, a in enumerate(chunk)]), chunk)
    rec.synchronize()
    estimate = rec.estimate_center()                    # first call: compiles what it needs
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec.estimate_center()
        rec.synchronize()
        times.append(time.perf_counter() - t0)
    return {"size": n, "projections_per_180": projections, "backend": rec.backend,
            "true_center": center, "estimate": round(estimate, 4),
            "error_px": round(estimate - center, 4),
            "estimate_s_median": round(float(np.median(times)), 5),
            "estimate_s_best": round(min(times), 5)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    ap.add_argument("--backend", default="numpy", choices=BACKENDS)
    ap.add_argument("--size", nargs=2, type=int, action="append", metavar=("N", "PROJECTIONS"),
                    help="detector side [pixels] and projections per 180 degrees")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args(argv)
    sizes = args.size or [(128, 180), (2048, 60)]
    results = []
    for n, projections in sizes:
        for center in true_centers(n):
            results.append(measure(n, projections, center, args.backend, args.repeats))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "python": platform.python_version(),
                      "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
