"""Cost of ring removal (RingRemoval fw) per frame; prints JSON (recorded in docs/benchmarks.md).

Two figures per size, on the backend asked for (NumPy by default):

- the ring-removal work of one push, timed piece by piece (best of ``repeats``): the running
  sum (the batch's frames added, the frames they replace subtracted), the stripe estimate (the
  mean frame normalised and ``-log``'d, Gaussian, median; made again once a 32nd of the buffer
  is new) and its subtraction from the batch; ``per_frame_s`` is their cost per frame pushed;
- the sustained incremental rate with RingRemoval None and fw (runs alternated, best of each),
  uint16 frames, angles walking on past 180 degrees so every frame replaces a slot.

Usage: ``python benchmarks/bench_rings.py [--backend numpy|cupy] [--size N NZ P] [--batch K]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import numpy as np

from tomostream.recon import OrthoReconstructor, rings
from tomostream.recon.bench import incremental_rate


def _filled(n: int, nz: int, p: int, backend: str, batch: int, ring_removal: str):
    """A reconstructor with a full buffer of uint16 frames, and one batch of frames."""
    rec = OrthoReconstructor(width=n, height=nz, buffer_size=p, backend=backend, rebuild_every=0)
    rec.set_flat(np.full((nz, n), 1000.0))
    rec.set_params(ring_removal=ring_removal)
    frames = np.random.default_rng(0).integers(600, 1000, (batch, nz, n), dtype=np.uint16)
    for start in range(0, p, batch):
        rec.push(frames, (start + np.arange(batch)) * (180.0 / p))
    rec.slices()
    return rec, frames


def _best(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def pieces(n: int, nz: int, p: int, backend: str, batch: int, repeats: int) -> dict:
    """Seconds of each part of the ring-removal work for one push of ``batch`` frames."""
    rec, frames = _filled(n, nz, p, backend, batch, "fw")
    be, pipe = rec.compute_backend, rec.pipeline
    est = pipe.stripes
    dev = be.asarray(frames)
    slots = np.arange(batch)
    occupied = rec.occupied
    old = be.asarray(slots.astype(np.int32))
    bad = be.counter()
    key = pipe.key(rec.params)
    out = pipe.absorption(dev, rec.params, bad)

    def absorption(mean):
        return pipe.absorption(mean, rec.params, bad)

    def track():                           # a batch in, the frames it replaces out
        est.track(rec.raw_frames, occupied, slots, old, dev)

    def estimate():
        est.forget()                       # made again, as once 1/32 of the buffer is new
        est.profile(absorption, key)

    with rec.stream:
        t_track = _best(track, repeats, rec.synchronize)
        t_estimate = _best(estimate, repeats, rec.synchronize)
        t_subtract = _best(lambda: est.subtract(out, absorption, key), repeats, rec.synchronize)
    # the estimate is made again at the first push after REFRESH of a full buffer is new
    every = batch * math.ceil(max(1.0, rings.REFRESH * p) / batch)
    per_frame = (t_track + t_subtract) / batch + t_estimate / every
    return {"track_s": round(t_track, 6), "estimate_s": round(t_estimate, 6),
            "subtract_s": round(t_subtract, 6), "estimate_every_frames": every,
            "per_frame_s": round(per_frame, 6)}


def rate(n: int, nz: int, p: int, backend: str, batch: int, seconds: float, rounds: int) -> dict:
    """Sustained incremental frames/s with RingRemoval None and fw (best of ``rounds`` each;
    nothing when ``rounds`` is 0)."""
    if rounds < 1:
        return {}
    best = {"none": 0.0, "fw": 0.0}
    for _ in range(rounds):
        for mode in best:
            rec, frames = _filled(n, nz, p, backend, batch, mode)
            fps, _ = incremental_rate(rec, frames, seconds)
            assert rec.up_to_date                                      # every push incremental
            best[mode] = max(best[mode], fps)
    return {"incremental_fps_none": round(best["none"], 1), "incremental_fps_fw": round(best["fw"], 1),
            "per_frame_fw_minus_none_s": round(1 / best["fw"] - 1 / best["none"], 6)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    ap.add_argument("--size", nargs=3, type=int, action="append", metavar=("N", "NZ", "P"),
                    help="detector width, height and buffer size (repeatable; default 512 512 360)")
    ap.add_argument("--batch", type=int, default=8, help="frames per push")
    ap.add_argument("--repeats", type=int, default=20, help="timings per piece (best kept)")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each incremental run")
    ap.add_argument("--rounds", type=int, default=3,
                    help="incremental runs per mode (best kept; 0: pieces only)")
    args = ap.parse_args(argv)
    results = []
    for n, nz, p in args.size or [(512, 512, 360)]:
        results.append({"size": f"{n}x{nz}x{p}", "backend": args.backend, "batch": args.batch,
                        **pieces(n, nz, p, args.backend, args.batch, args.repeats),
                        **rate(n, nz, p, args.backend, args.batch, args.seconds, args.rounds)})
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "host": platform.node(),
                      "cpu": platform.processor() or platform.machine(), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
