"""What the engine is given, checked and laid out: frames, angles and fields (refused with a
message naming the problem), the slots of a push and the frame table the kernels read.

Plain functions on the host (NumPy); the reconstructor uploads what they return.
"""

from __future__ import annotations

import numpy as np

from tomostream.errors import BadFrame, BadParameter

#: Detector frame types the engine takes (what areaDetector sends).
FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def chunk_size(remaining: int, batch: int) -> int:
    """Frames in the next chunk of a push: a full ``batch``, else the largest power of two
    that fits. However the frames arrive, the device then sees a handful of chunk shapes (so
    a handful of FFT plans and work buffers), and its memory stops growing once it has met
    them all instead of growing with every new remainder size."""
    if remaining >= batch:
        return batch
    return 1 << (remaining.bit_length() - 1)


def check_field(name: str, a, shape: tuple[int, int]) -> np.ndarray:
    """A dark or flat field ``a`` of ``shape`` (nz, n) [counts] as float32.

    Raises
    ------
    BadFrame
        Wrong shape, a type that is not a real number, or non-finite pixels.
    """
    a = np.asarray(a)
    if a.shape != shape:
        raise BadFrame(f"{name} has shape {a.shape}, expected {shape}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise BadFrame(f"{name} has dtype {a.dtype}, expected a real number type")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise BadFrame(f"{name} contains {np.count_nonzero(~np.isfinite(a))} non-finite pixels")
    return a


def check_frames(frames, angles, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(k, nz, n)`` (one ``(nz, n)`` frame is taken as k = 1) and their angles
    ``(k,)`` float64 [degrees], checked.

    Raises
    ------
    BadFrame
        Wrong shape or dtype (see :data:`FRAME_DTYPES`).
    BadParameter
        Angles of the wrong length, not numbers or not finite.
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3 or frames.shape[1:] != shape:
        raise BadFrame(f"frames have shape {frames.shape}, expected (k, {shape[0]}, {shape[1]})")
    if frames.dtype not in FRAME_DTYPES:
        raise BadFrame(f"frames have dtype {frames.dtype}, expected one of "
                       f"{', '.join(str(d) for d in FRAME_DTYPES)}")
    try:
        angles = np.atleast_1d(np.asarray(angles, dtype=np.float64))
    except (TypeError, ValueError):
        raise BadParameter(f"angles={angles!r} are not numbers") from None
    if angles.shape != (frames.shape[0],):
        raise BadParameter(f"angles have shape {angles.shape}, expected ({frames.shape[0]},) "
                           f"(one per frame)")
    if not np.isfinite(angles).all():
        raise BadParameter(f"angles contain non-finite values: {angles[~np.isfinite(angles)][:5]}")
    return frames, angles


def slots_of(angles: np.ndarray, slots: int) -> np.ndarray:
    """Slot of each angle [degrees] in a buffer of ``slots`` over 180 degrees (int64)."""
    a = np.mod(angles, 180.0)
    return np.minimum((a * (slots / 180.0)).astype(np.int64), slots - 1)


def last_per_slot(slots: np.ndarray, size: int) -> np.ndarray:
    """Indices of the frames that count, in order: of several frames for one slot (of a
    buffer of ``size``) only the last."""
    seen = np.zeros(size, dtype=bool)
    keep = np.zeros(slots.size, dtype=bool)
    for i in range(slots.size - 1, -1, -1):
        if not seen[slots[i]]:
            seen[slots[i]] = keep[i] = True
    return np.nonzero(keep)[0]


def pack_frames(slots: np.ndarray, angles: np.ndarray, weight: float) -> np.ndarray:
    """The frame table of a backprojection: slots, cos, sin and weights of ``k`` frames packed
    as ``4 k`` int32 (floats bit-cast), for one upload; see :func:`unpack_frames`."""
    t = np.deg2rad(angles)
    f = np.stack([np.cos(t), np.sin(t), np.full(t.size, weight)]).astype(np.float32)
    return np.concatenate([slots.astype(np.int32), f.view(np.int32).ravel()])


def unpack_frames(table, xp):
    """Slots (int32), cos, sin and weights (float32) of a :func:`pack_frames` table, as views
    on its device (``xp``: numpy or cupy)."""
    m = table.size // 4
    idx, rest = table[:m], table[m:].view(xp.float32)
    return idx, rest[:m], rest[m:2 * m], rest[2 * m:]
