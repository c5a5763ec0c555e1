"""Choice of compute backend: CuPy on a CUDA GPU, NumPy (with numba kernels) otherwise.

A :class:`Backend` bundles the array module, the kernels (same signatures on both) and the
few operations that differ between host and device memory.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

from tomostream.errors import BackendUnavailable, BadParameter

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class Backend:
    """One compute backend.

    Attributes
    ----------
    name : str
        ``"numpy"`` or ``"cupy"``.
    reason : str
        Why this backend was chosen.
    xp : module
        ``numpy`` or ``cupy``.
    kernels : module
        :mod:`._cpu_kernels` or :mod:`._gpu_kernels`.
    ndimage : module
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    device : str
        Human-readable device name.
    failures : tuple of exception types
        Errors that mean the device ran out of memory or failed (CuPy: ``MemoryError``, which
        CuPy's ``OutOfMemoryError`` is, and the CUDA runtime, driver, compiler and cuFFT
        errors; cuFFT reports a plan it has no memory for as ``CUFFT_ALLOC_FAILED``).
        :class:`~tomostream.recon.OrthoReconstructor` answers them with smaller batches, then
        the NumPy backend.
    """

    name: str
    reason: str
    xp: ModuleType
    kernels: ModuleType
    ndimage: ModuleType
    device: str
    failures: tuple[type[BaseException], ...] = (MemoryError,)

    def asarray(self, a, dtype=None):
        """``a`` on this backend's device (a synchronous copy for host arrays)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a) -> np.ndarray:
        """``a`` as a NumPy array (on a GPU: in page-locked memory from CuPy's pinned pool, so
        the copy runs at full bus speed; the pool recycles it once the array is released)."""
        if self.name != "cupy":
            return np.asarray(a)
        out = self.empty_host(a.shape, a.dtype)
        a.get(out=out)
        return out

    def empty_host(self, shape, dtype) -> np.ndarray:
        """An uninitialised host array that :meth:`asarray` and uploads copy fastest from
        (page-locked on a GPU; plain NumPy memory on the CPU)."""
        if self.name != "cupy":
            return np.empty(shape, dtype=dtype)
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def free_bytes(self) -> int | None:
        """Free device memory [bytes] (``None`` on the host: not checked)."""
        if self.name != "cupy":
            return None
        free, _ = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def stream(self):
        """A context in which work is queued on a dedicated non-blocking stream (GPU only)."""
        if self.name != "cupy":
            return contextlib.nullcontext()
        return self.xp.cuda.Stream(non_blocking=True)


def _numpy(reason: str) -> Backend:
    import scipy.ndimage

    from tomostream.recon import _cpu_kernels

    return Backend("numpy", reason, np, _cpu_kernels, scipy.ndimage, "CPU")


def _cupy() -> Backend:
    """The CuPy backend, or BackendUnavailable saying why not."""
    try:
        cp = importlib.import_module("cupy")
    except ImportError as exc:
        raise BackendUnavailable(f"backend='cupy' needs CuPy, which does not import: {exc}") from exc
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as exc:
        raise BackendUnavailable(f"backend='cupy': CuPy sees no CUDA device: {exc}") from exc
    if count < 1:
        raise BackendUnavailable("backend='cupy': CuPy sees no CUDA device")
    import cupyx.scipy.ndimage

    from tomostream.recon import _gpu_kernels

    dev = cp.cuda.Device()
    name = cp.cuda.runtime.getDeviceProperties(dev.id)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    failures = (MemoryError, cp.cuda.runtime.CUDARuntimeError, cp.cuda.driver.CUDADriverError,
                cp.cuda.compiler.CompileException, cp.cuda.cufft.CuFFTError)
    return Backend("cupy", "", cp, _gpu_kernels, cupyx.scipy.ndimage, f"{name} (device {dev.id})",
                   failures)


def cpu_backend(reason: str) -> Backend:
    """The NumPy backend, with ``reason`` saying why it is used."""
    return _numpy(reason)


def select_backend(request: str | Backend = "auto") -> Backend:
    """Pick a backend.

    Parameters
    ----------
    request : {"auto", "numpy", "cupy"} or Backend
        ``"auto"`` takes CuPy when it imports and sees a device, else NumPy. A
        :class:`Backend` is used as it is (e.g. one that injects failures in tests).

    Raises
    ------
    BadParameter
        Unknown ``request``.
    BackendUnavailable
        ``"cupy"`` requested but unusable.
    """
    if isinstance(request, Backend):
        return request
    if request not in BACKENDS:
        raise BadParameter(f"backend={request!r} is not one of {BACKENDS}")
    if request == "numpy":
        return _numpy("backend='numpy' requested")
    if request == "cupy":
        b = _cupy()
        return replace(b, reason=f"backend='cupy' requested; using {b.device}")
    try:
        b = _cupy()
    except BackendUnavailable as exc:
        return _numpy(f"auto: {exc}; using NumPy")
    return replace(b, reason=f"auto: CuPy imports and sees {b.device}")
