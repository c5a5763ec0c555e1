"""Compile the engine's kernels before the first frames come.

The CPU kernels are numba functions compiled at their first call (several seconds on a
2-core machine the first time, then loaded from numba's cache in under a second) and the GPU
kernels are CUDA modules compiled at their first launch. Frames that arrive meanwhile wait
in the server's queue, and at 100 frames/s a few seconds of compilation overflow it: the first
projections of a scan would be dropped. :func:`warm_up` runs every kernel of a push and of an
image once, on tiny frames of each accepted type, before a stream starts.
"""

from __future__ import annotations

import time

import numpy as np

from tomostream.recon.inputs import FRAME_DTYPES
from tomostream.recon.reconstructor import OrthoReconstructor

#: Size of the frames the kernels are compiled on [pixels]: small, work is negligible.
WIDTH, HEIGHT = 16, 8
#: Angles per 180 degrees of the warm-up reconstructor, and frames pushed per type.
ANGLES, FRAMES = 4, 2


def warm_up(backend: str = "auto") -> tuple[str, float]:
    """Run the push and image kernels once for every frame type.

    Parameters
    ----------
    backend : {"auto", "numpy", "cupy"}
        Backend to compile, chosen as :class:`OrthoReconstructor` chooses it.

    Returns
    -------
    (str, float)
        The backend used and the seconds it took [s].
    """
    start = time.perf_counter()
    rec = OrthoReconstructor(WIDTH, HEIGHT, ANGLES, backend=backend)
    rec.set_dark(np.zeros((HEIGHT, WIDTH), np.float32))
    rec.set_flat(np.full((HEIGHT, WIDTH), 200.0, np.float32))
    angles = np.arange(FRAMES) * (180.0 / ANGLES)
    for dtype in FRAME_DTYPES:
        frames = np.full((FRAMES, HEIGHT, WIDTH), 100, dtype)
        rec.push(frames, angles)
        rec.image()
    return rec.backend, time.perf_counter() - start
