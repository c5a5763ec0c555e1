"""What the engine asks of a device's memory: the batch its work space allows, and the
buffers of a reconstructor, refused when they do not fit.
"""

from __future__ import annotations

import numpy as np

from tomostream.errors import BadParameter
from tomostream.recon.filters import padded_length

#: Most frames processed together.
MAX_BATCH = 32


def batch_size(width: int, height: int, free: int | None) -> int:
    """Frames processed together by default: what fits 512 MiB of work space on the CPU
    (``free`` None), an eighth of the ``free`` device memory [bytes] up to 4 GiB on a GPU
    (larger batches, fewer launches); at most :data:`MAX_BATCH`, at least 1."""
    frame_work = height * padded_length(width) * 4 * 4     # padded rows, spectrum, temporaries
    work = 512 << 20 if free is None else min(4 << 30, free // 8)
    return int(max(1, min(MAX_BATCH, work // frame_work)))


def check_room(width: int, height: int, slots: int, batch: int, free: int | None,
               device: str) -> None:
    """Refuse buffers that would not fit ``free`` device memory [bytes] (None: not checked).

    The filtered (float32) and raw (uint16, as integer frames are kept) frame buffers of
    ``slots`` frames, the work space of ``batch`` frames and the slice sums must fit in 95 %
    of it.

    Raises
    ------
    BadParameter
        Naming the size asked for, what it needs and what ``device`` has free.
    """
    if free is None:
        return
    n, nz = width, height
    need = slots * nz * n * (4 + np.dtype(np.uint16).itemsize) \
        + batch * nz * padded_length(n) * 16 * 2 + 3 * max(n, nz) * n * 8
    if need > 0.95 * free:
        raise BadParameter(f"buffer_size={slots} of {n}x{nz} frames needs {need / 2**30:.1f} GiB on "
                           f"{device}, only {free / 2**30:.1f} GiB free")
