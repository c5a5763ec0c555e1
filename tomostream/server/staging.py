"""Frames copied into the reconstructor's page-locked host buffer by several threads.

Before a push, the frames of a batch are stacked in the buffer the reconstructor uploads from
(:meth:`~tomostream.recon.OrthoReconstructor.host_frames`). At 2048^2 and 360 frames/s that
is 3 GB/s; one thread copied 5.4 GB/s on an H100 host, a third of the worker's time. NumPy
lets go of the GIL while it copies, so row blocks copied by a few threads run side by side.
Small batches (where starting the copies would cost more than they save) and machines with
few cores copy in the calling thread.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: Batches smaller than this are copied by the calling thread [bytes].
PARALLEL_BYTES = 4 << 20
#: Most copying threads.
MAX_THREADS = 4


def default_threads() -> int:
    """Copying threads for this machine: half its cores, at most :data:`MAX_THREADS`."""
    return max(1, min(MAX_THREADS, (os.cpu_count() or 1) // 2))


class FrameStager:
    """Stack 2-D frames into a ``(k, height, width)`` array with ``threads`` threads.

    Parameters
    ----------
    threads : int, optional
        Copying threads (default :func:`default_threads`); 1 copies in the calling thread.
    """

    def __init__(self, threads: int | None = None):
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self._pool = (ThreadPoolExecutor(self.threads, thread_name_prefix="tomostream-stage")
                      if self.threads > 1 else None)

    def stack(self, arrays: Sequence[np.ndarray], out: np.ndarray) -> np.ndarray:
        """Copy ``arrays`` (equal 2-D shapes) into ``out[:len(arrays)]``; returns that part."""
        out = out[:len(arrays)]
        if self._pool is None or out.nbytes < PARALLEL_BYTES:
            return np.stack(arrays, out=out)
        if any(a.shape != out.shape[1:] for a in arrays):
            raise ValueError(f"frames of shapes {sorted({a.shape for a in arrays})} do not fit "
                             f"{out.shape[1:]}")
        height = out.shape[1]
        step = -(-height // self.threads)
        blocks = [(i, r, min(r + step, height)) for i in range(len(arrays))
                  for r in range(0, height, step)]

        def copy(block: tuple[int, int, int]) -> None:
            i, r0, r1 = block
            np.copyto(out[i, r0:r1], arrays[i][r0:r1])

        for _ in self._pool.map(copy, blocks):   # re-raises a failed copy
            pass
        return out

    def close(self) -> None:
        """Stop the copying threads (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
