"""``tomostream bench``: time the reconstruction engine on this machine, print JSON.

Two figures per size: the full rebuild (three slices recomputed from the whole filtered
buffer, as after a change of center) and the sustained incremental rate (frames pushed from
host memory, page-locked on a GPU, ``batch`` per push, until the device is idle).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from tomostream.recon import OrthoReconstructor
from tomostream.recon.backend import BACKENDS


def _host_frames(backend: str, k: int, nz: int, n: int, seed: int = 0) -> np.ndarray:
    """``k`` uint16 frames, page-locked when the backend is CuPy."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(600, 1000, (k, nz, n), dtype=np.uint16)
    if backend != "cupy":
        return frames
    import cupyx

    pinned = cupyx.empty_pinned(frames.shape, dtype=frames.dtype)
    pinned[...] = frames
    return pinned


def incremental_rate(rec: OrthoReconstructor, frames, seconds: float) -> tuple[float, int]:
    """Sustained incremental pushes of ``frames`` (a batch) for ``seconds`` [s], angles walking
    on past 180 degrees so every frame replaces a slot, timed until the device is idle.

    Returns
    -------
    (float, int)
        Frames per second, frames pushed.
    """
    batch, step = len(frames), 180.0 / rec.buffer_size
    pushed, angle = 0, 0.3 * step
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        rec.push(frames, angle + np.arange(batch) * step)
        angle += batch * step
        pushed += batch
    rec.synchronize()
    return pushed / (time.perf_counter() - t0), pushed


def measure(n: int, nz: int, p: int, backend: str = "auto", batch: int = 32, rebuilds: int = 5,
            seconds: float = 3.0, zoom: float = 1.0) -> dict:
    """Time one ``n`` x ``nz`` detector with a ``p``-slot buffer (slices at ``zoom``).

    Returns
    -------
    dict
        size, backend, device, full_rebuild_s (best of ``rebuilds``), incremental_fps, ...
    """
    rec = OrthoReconstructor(width=n, height=nz, buffer_size=p, backend=backend, rebuild_every=0)
    rec.set_flat(np.full((nz, n), 1000.0))
    rec.set_params(zoom=zoom)
    frames = _host_frames(rec.backend, batch, nz, n)
    step = 180.0 / p
    t0 = time.perf_counter()
    for start in range(0, p, batch):
        k = min(batch, p - start)
        rec.push(frames[:k], (start + np.arange(k)) * step)
    rec.synchronize()
    fill_s = time.perf_counter() - t0
    rec.slices()                                            # compile, first rebuild
    times = []
    for i in range(rebuilds):
        rec.set_params(center=n / 2 + 0.25 * (i % 2 + 1))
        t0 = time.perf_counter()
        rec.slices()
        times.append(time.perf_counter() - t0)
    fps, pushed = incremental_rate(rec, frames, seconds)
    stale = rec._stale_sums                                 # must be False: every push was incremental
    return {
        "size": f"{n}x{nz}x{p}", "zoom": zoom, "backend": rec.backend, "device": rec.compute_backend.device,
        "batch": batch,
        "fill_s": round(fill_s, 4), "full_rebuild_s": round(min(times), 5),
        "full_rebuild_median_s": round(float(np.median(times)), 5),
        "incremental_fps": round(fps, 1), "incremental_frames": pushed,
        "incremental_path": not stale,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``tomostream bench``."""
    ap = argparse.ArgumentParser(prog="tomostream bench", description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="auto", choices=BACKENDS)
    ap.add_argument("--size", nargs=3, type=int, action="append", metavar=("N", "NZ", "P"),
                    help="detector width, height and buffer size (repeatable; default 256 256 180)")
    ap.add_argument("--batch", type=int, default=32, help="frames per push")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of the incremental run")
    ap.add_argument("--zoom", type=float, default=1.0, help="software zoom of the slices (1..16)")
    args = ap.parse_args(argv)
    results = [measure(n, nz, p, args.backend, args.batch, seconds=args.seconds, zoom=args.zoom)
               for n, nz, p in (args.size or [(256, 256, 180)])]
    print(json.dumps({"date": time.strftime("%Y-%m-%d"), "host": platform.node(),
                      "cpu": platform.processor() or platform.machine(), "results": results}, indent=1))
    return 0
