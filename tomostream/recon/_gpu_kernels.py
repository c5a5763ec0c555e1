"""CuPy wrappers of the CUDA kernels in ``kernels.cu``: same names and signatures as the numba
twins in :mod:`tomostream.recon._cpu_kernels` (see there for the parameters), plus the
host-to-device :class:`Uploader`. Importing this module requires CuPy.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cupy as cp
import numpy as np

_SOURCE = Path(__file__).with_name("kernels.cu")
_PREPROCESS = {np.dtype(np.uint8): "preprocess<unsigned char>",
               np.dtype(np.uint16): "preprocess<unsigned short>",
               np.dtype(np.float32): "preprocess<float>"}
_PER = 8            # columns per thread in backproject_yx (PER in kernels.cu)
_YF = 1             # frames per shared-memory stage in backproject_yx (YF in kernels.cu)
_ZROWS = 4          # output rows per thread in backproject_z (ZROWS in kernels.cu)
_MAX_THREADS = 1024


@functools.cache
def _module(device_id: int) -> cp.RawModule:
    """The compiled kernels for one device (memoized)."""
    with cp.cuda.Device(device_id):
        return cp.RawModule(code=_SOURCE.read_text(), options=("-std=c++17",),
                            name_expressions=tuple(_PREPROCESS.values()))


def _function(name: str):
    return _module(cp.cuda.Device().id).get_function(name)


def _check(name: str, a, dtype, ndim: int) -> None:
    if not isinstance(a, cp.ndarray) or a.dtype != dtype or a.ndim != ndim or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {ndim}-D cupy {np.dtype(dtype)} array, got "
                        f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")


def _check_frames(filt, idx, cos_t, sin_t, weights) -> None:
    _check("filt", filt, np.float32, 3)
    _check("idx", idx, np.int32, 1)
    for name, a in (("cos_t", cos_t), ("sin_t", sin_t), ("weights", weights)):
        _check(name, a, np.float32, 1)
        if a.shape != idx.shape:
            raise ValueError(f"{name} has shape {a.shape}, idx {idx.shape}")


def frame_buffer(p: int, nz: int, n: int) -> cp.ndarray:
    """Zeroed C-contiguous buffer of ``p`` filtered frames ``(p, nz, n)`` float32 (the layout of
    these kernels; see :func:`tomostream.recon._cpu_kernels.frame_buffer`)."""
    return cp.zeros((p, nz, n), dtype=cp.float32)


def preprocess(raw, dark, flat, take_log, out, bad) -> None:
    """Flat-field normalise (and ``-log``); see :func:`tomostream.recon._cpu_kernels.preprocess`."""
    if raw.dtype not in _PREPROCESS:
        raise TypeError(f"raw dtype {raw.dtype} not supported")
    _check("raw", raw, raw.dtype, 3)
    _check("dark", dark, np.float32, 2)
    _check("flat", flat, np.float32, 2)
    _check("out", out, np.float32, 3)
    _check("bad", bad, np.uint64, 1)
    k, nz, n = raw.shape
    if out.shape[:2] != (k, nz) or out.shape[2] < n:
        raise ValueError(f"out has shape {out.shape}, expected ({k}, {nz}, >= {n})")
    total = out.size
    blocks = int(min(max(1, -(-total // 256)), 65535 * 4))
    _function(_PREPROCESS[raw.dtype])((blocks,), (256,), (raw, dark, flat, np.int32(nz), np.int32(n),
                                                          np.int32(out.shape[2]), np.int64(total),
                                                          np.int32(bool(take_log)), out, bad))


def backproject_z(filt, idx, cos_t, sin_t, weights, center, iz, out) -> None:
    """Z slice; see :func:`tomostream.recon._cpu_kernels.backproject_z`.

    The weighted row ``iz`` of the frames is first gathered into a contiguous zero-padded
    sinogram ``(k, n + 3)`` (device work space), which the slice kernel reads through the cache.
    """
    _check_frames(filt, idx, cos_t, sin_t, weights)
    _check("out", out, np.float64, 2)
    _, nz, n = filt.shape
    k = idx.size
    sino = cp.empty((k, n + 3), dtype=cp.float32)
    total = sino.size
    _function("gather_sinogram")((int(min(-(-total // 256), 65535 * 4)),), (256,),
                                 (filt, idx, weights, np.int32(k), np.int32(nz), np.int32(n), np.int32(iz),
                                  sino))
    block = (32, 8)
    grid = (-(-n // block[0]), -(-n // (block[1] * _ZROWS)))
    _function("backproject_z")(grid, block, (sino, cos_t, sin_t, np.int32(k), np.int32(n), np.float32(center),
                                             out))


def backproject_yx(filt, idx, cos_t, sin_t, weights, center, iy, ix, out_y, out_x) -> None:
    """Y and X slices; see :func:`tomostream.recon._cpu_kernels.backproject_yx`."""
    _check_frames(filt, idx, cos_t, sin_t, weights)
    _check("out_y", out_y, np.float64, 2)
    _check("out_x", out_x, np.float64, 2)
    _, nz, n = filt.shape
    per_thread = -(-n // _PER)
    threads = max(32, -(-per_thread // 32) * 32)
    if threads > _MAX_THREADS:
        raise ValueError(f"width {n} exceeds the {_MAX_THREADS * _PER} columns backproject_yx supports")
    func = _function("backproject_yx")
    shared = 4 * _YF * (n + 3)
    if shared > 48 * 1024 and func.max_dynamic_shared_size_bytes < shared:
        func.max_dynamic_shared_size_bytes = shared             # opt-in beyond 48 KiB
    func((nz,), (threads,), (filt, idx, cos_t, sin_t, weights, np.int32(idx.size), np.int32(nz), np.int32(n),
                             np.float32(center), np.int32(iy), np.int32(ix), out_y, out_x),
         shared_mem=shared)


def backproject_points(filt, idx, cos_t, sin_t, weights, center, points, out) -> None:
    """Tilted slices; see :func:`tomostream.recon._cpu_kernels.backproject_points`."""
    _check_frames(filt, idx, cos_t, sin_t, weights)
    _check("points", points, np.float32, 2)
    _check("out", out, np.float64, 1)
    _, nz, n = filt.shape
    m = points.shape[0]
    _function("backproject_points")((-(-m // 256),), (256,),
                                    (filt, idx, cos_t, sin_t, weights, np.int32(idx.size), np.int32(nz),
                                     np.int32(n), np.float32(center), points, np.int64(m), out))


def _is_pinned(a: np.ndarray) -> bool:
    """Whether ``a``'s memory is page-locked (so a copy from it can be asynchronous)."""
    try:
        attrs = cp.cuda.runtime.pointerGetAttributes(a.ctypes.data)
    except cp.cuda.runtime.CUDARuntimeError:
        return False
    return attrs.type == getattr(cp.cuda.runtime, "memoryTypeHost", 1)


class Uploader:
    """Double-buffered host-to-device copies on their own stream.

    The copy of one batch overlaps the processing of the previous one on ``compute`` and the
    queuing of its own processing by the host: a batch is copied into one of two device
    staging buffers (page-locked host arrays directly, others through a page-locked staging
    copy), ``compute`` waits for that copy, and a buffer is reused only after the work
    recorded by :meth:`release` is done. :meth:`wait` returns once every copy is done (the
    host arrays may then be reused).

    Parameters
    ----------
    nbytes : int [bytes]
        Largest batch (all arrays of one :meth:`upload` together).
    compute : cupy.cuda.Stream
        Stream that consumes the uploads.
    """

    ALIGN = 256

    def __init__(self, nbytes: int, compute: cp.cuda.Stream) -> None:
        self.compute = compute
        self.copy = cp.cuda.Stream(non_blocking=True)
        self.nbytes = int(nbytes)
        self._dev = [cp.empty(self.nbytes, dtype=cp.uint8) for _ in range(2)]
        self._host = [cp.cuda.alloc_pinned_memory(self.nbytes) for _ in range(2)]
        self._free = [None, None]                   # compute done with device buffer b
        self._copied = [None, None]                 # copy out of (host staging) buffer b done
        self._next = 0

    def upload(self, *arrays: np.ndarray):
        """Queue the copy of ``arrays`` to the device; returns ``(device_arrays, token)``.

        The copy may still be running: keep ``arrays`` unchanged until :meth:`wait`.
        """
        b = self._next
        self._next ^= 1
        if self._free[b] is not None:
            self.copy.wait_event(self._free[b])
        if self._copied[b] is not None:
            self._copied[b].synchronize()           # host staging buffer b is read no more
        out, offset = [], 0
        for a in arrays:
            a = np.ascontiguousarray(a)
            end = offset + a.nbytes
            if end > self.nbytes:
                raise ValueError(f"batch of {end} bytes exceeds the {self.nbytes} staged")
            src = a
            if not _is_pinned(a):
                src = np.frombuffer(self._host[b], dtype=a.dtype, count=a.size, offset=offset)
                src = src.reshape(a.shape)
                np.copyto(src, a)
            dev = self._dev[b][offset:end].view(a.dtype).reshape(a.shape)
            dev.set(src, stream=self.copy)
            out.append(dev)
            offset = -(-end // self.ALIGN) * self.ALIGN
        self._copied[b] = self.copy.record()
        self.compute.wait_event(self._copied[b])
        return out, b

    def release(self, token: int) -> None:
        """Mark the work queued so far on ``compute`` as the last use of upload ``token``."""
        self._free[token] = self.compute.record()

    def wait(self) -> None:
        """Return once every queued copy is done (the host arrays uploaded may be reused)."""
        self.copy.synchronize()
