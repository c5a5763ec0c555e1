"""Compute backends that fail the way a GPU does, built on the NumPy backend.

- :func:`small_memory_backend`: an array module whose ``empty`` raises ``MemoryError`` above a
  size, as CuPy's allocator does when the device is full (work space grows with the batch);
- :func:`broken_device_backend`: kernels that raise a device error after some calls, as a
  CUDA launch does once the device has failed;
- :func:`gated_backend`: kernels that wait for a gate to open (a consumer slower than the
  detector, as slow as the test wants).
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from tomostream.recon import _cpu_kernels
from tomostream.recon.backend import Backend, select_backend


class DeviceError(RuntimeError):
    """Stands for ``cupy.cuda.runtime.CUDARuntimeError`` (e.g. an illegal address)."""


class _SmallMemory:
    """NumPy, except that ``empty`` of more than ``limit`` bytes raises MemoryError."""

    def __init__(self, limit: int):
        self.limit = limit
        self.refused = 0

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=float, **kw):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if nbytes > self.limit:
            self.refused += 1
            raise MemoryError(f"Out of memory allocating {nbytes:,} bytes (limit {self.limit:,})")
        return np.empty(shape, dtype, **kw)


def _kernels(**overrides) -> SimpleNamespace:
    names = ("preprocess", "frame_buffer", "backproject_z", "backproject_yx", "backproject_points")
    return SimpleNamespace(**{**{n: getattr(_cpu_kernels, n) for n in names}, **overrides})


def _base() -> Backend:
    return select_backend("numpy")


def small_memory_backend(limit: int) -> Backend:
    """A "device" whose allocations above ``limit`` bytes fail with MemoryError."""
    return replace(_base(), name="smallgpu", reason="test device with little memory",
                   xp=_SmallMemory(limit), device="test device")


def broken_device_backend(after_calls: int) -> Backend:
    """A "device" whose Z backprojection fails with :class:`DeviceError` after ``after_calls``."""
    calls = {"n": 0}

    def backproject_z(*args):
        calls["n"] += 1
        if calls["n"] > after_calls:
            raise DeviceError("cudaErrorIllegalAddress: an illegal memory access was encountered")
        return _cpu_kernels.backproject_z(*args)

    return replace(_base(), name="brokengpu", reason="test device that fails",
                   kernels=_kernels(backproject_z=backproject_z), device="test device",
                   failures=(MemoryError, DeviceError))


def gated_backend(gate, timeout: float = 30.0) -> Backend:
    """NumPy kernels that pre-process a batch only once ``gate`` (a threading.Event) is set.

    While the gate is closed the reconstructor is stuck in ``push``: a consumer infinitely
    slower than the detector. ``timeout`` [s] bounds the wait, so a failing test never hangs.
    """

    def preprocess(*args):
        gate.wait(timeout)
        return _cpu_kernels.preprocess(*args)

    return replace(_base(), reason="test backend that waits for a gate",
                   kernels=_kernels(preprocess=preprocess))
