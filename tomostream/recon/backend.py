"""Choice of compute backend: CuPy on a CUDA GPU, NumPy (with numba kernels) otherwise.

A :class:`Backend` bundles the array module, the kernels (same signatures on both) and the
few operations that differ between host and device memory, which :class:`NumpyBackend` and
:class:`CupyBackend` each implement. Everything else the engine does is written once, on the
array module ``xp``.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import math
from dataclasses import dataclass, replace
from types import ModuleType

import numpy as np

from tomostream.errors import BackendUnavailable, BadParameter

BACKENDS = ("auto", "numpy", "cupy")


@dataclass(frozen=True)
class Backend(abc.ABC):
    """One compute backend: what :class:`NumpyBackend` and :class:`CupyBackend` share.

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

    #: dtype of the non-finite pixel counter the normalisation kernel adds to.
    counter_dtype = np.dtype(np.int64)

    def asarray(self, a, dtype=None):
        """``a`` on this backend's device (a synchronous copy for host arrays)."""
        return self.xp.asarray(a, dtype=dtype)

    def counter(self):
        """A zeroed 1-element counter of non-finite pixels, on the device."""
        return self.xp.zeros(1, dtype=self.counter_dtype)

    def rescue(self, a) -> np.ndarray | None:
        """A host copy of ``a``; None for None, or when the device no longer answers."""
        if a is None:
            return None
        try:
            return np.array(self.to_host(a))
        except self.failures:
            return None

    @abc.abstractmethod
    def to_host(self, a) -> np.ndarray:
        """``a`` as a NumPy array."""

    @abc.abstractmethod
    def empty_host(self, shape, dtype) -> np.ndarray:
        """An uninitialised host array that :meth:`asarray` and uploads copy fastest from."""

    @abc.abstractmethod
    def free_bytes(self) -> int | None:
        """Free device memory [bytes] (``None`` on the host: not checked)."""

    @abc.abstractmethod
    def stream(self):
        """A context in which work is queued on a dedicated stream of the device."""

    @abc.abstractmethod
    def synchronize(self, stream) -> None:
        """Wait until the work queued on ``stream`` is done."""

    @abc.abstractmethod
    def uploader(self, batch: int, frame: tuple[int, int], stream):
        """What puts batches of up to ``batch`` frames of shape ``frame`` (and their frame
        tables) on the device for work queued on ``stream``: ``upload(*arrays)`` ->
        ``(device arrays, token)``, ``release(token)`` once the work on them is queued,
        ``wait()`` until the host arrays may be reused (see :class:`HostUploader`)."""

    @abc.abstractmethod
    def assemble(self, sums, scale: float, out: np.ndarray, canvas=None):
        """The slices ``sums`` (Z, Y, X) times ``scale`` side by side in ``out`` (see
        :meth:`OrthoReconstructor.image`); returns ``(peak, canvas)``: the largest pixel (or
        None) and the device image to give back at the next call."""


@dataclass(frozen=True)
class NumpyBackend(Backend):
    """The host backend: NumPy arrays in ordinary memory, numba kernels, work done as it is
    called."""

    def to_host(self, a) -> np.ndarray:
        return np.asarray(a)

    def empty_host(self, shape, dtype) -> np.ndarray:
        """Plain NumPy memory."""
        return np.empty(shape, dtype=dtype)

    def free_bytes(self) -> int | None:
        """``None``: host memory is not checked."""
        return None

    def stream(self):
        """Nothing: work is done as it is called."""
        return contextlib.nullcontext()

    def synchronize(self, stream) -> None:
        """Nothing to wait for."""

    def uploader(self, batch: int, frame: tuple[int, int], stream):
        """A :class:`HostUploader`: the arrays are used where they are."""
        return HostUploader()

    def assemble(self, sums, scale: float, out: np.ndarray, canvas=None):
        """``out`` written directly (its padding zeroed); ``peak`` None, as finding it would
        be a pass over the image."""
        n, nz = sums[0].shape[0], sums[1].shape[0]
        out[n:, :n] = 0.0                   # below the Z slice when nz > n
        out[nz:, n:] = 0.0                  # below the vertical slices when n > nz
        place_slices(self.xp, sums, scale, out)
        return None, canvas


@dataclass(frozen=True)
class CupyBackend(Backend):
    """The CuPy backend: arrays in device memory, work queued on CUDA streams."""

    counter_dtype = np.dtype(np.uint64)

    def to_host(self, a) -> np.ndarray:
        """``a`` as a NumPy array, in page-locked memory from CuPy's pinned pool (so the copy
        runs at full bus speed; the pool recycles it once the array is released)."""
        out = self.empty_host(a.shape, a.dtype)
        a.get(out=out)
        return out

    def empty_host(self, shape, dtype) -> np.ndarray:
        """An uninitialised page-locked host array (uploads copy from it directly)."""
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def free_bytes(self) -> int | None:
        """Free device memory, the memory pool's free blocks included [bytes]."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        pool = self.xp.get_default_memory_pool()
        return int(free + pool.free_bytes())

    def stream(self):
        """A non-blocking CUDA stream (a context: work inside it is queued there)."""
        return self.xp.cuda.Stream(non_blocking=True)

    def synchronize(self, stream) -> None:
        """Wait until the work queued on ``stream`` is done."""
        stream.synchronize()

    def uploader(self, batch: int, frame: tuple[int, int], stream):
        """Double-buffered copies on their own stream (:class:`._gpu_kernels.Uploader`),
        staging a batch of float32 frames and its frame tables."""
        item = 4 * (frame[0] * frame[1] + 8 * batch + 1024)
        return self.kernels.Uploader(batch * item, stream)

    def assemble(self, sums, scale: float, out: np.ndarray, canvas=None):
        """The image assembled on the device in ``canvas`` (made, zeroed, when it has not the
        shape of ``out``: its padding is never written) and copied to ``out`` in one
        transfer; ``peak`` is its largest pixel, None where some pixel is not finite."""
        if canvas is None or canvas.shape != out.shape:
            canvas = self.xp.zeros(out.shape, dtype=self.xp.float32)
        place_slices(self.xp, sums, scale, canvas)
        top = canvas.max()
        canvas.get(out=out)                 # waits for the copy
        return (float(top) if math.isfinite(float(top)) else None), canvas


class HostUploader:
    """The uploads of the host backend: the arrays are used where they are."""

    def upload(self, *arrays: np.ndarray):
        """``(arrays, token)``: the arrays themselves."""
        return list(arrays), None

    def release(self, token) -> None:
        """Nothing to release: no staging buffers."""

    def wait(self) -> None:
        """Nothing to wait for: no copies."""


def place_slices(xp, sums, scale: float, img) -> None:
    """Write the Z ``(n, n)``, Y and X ``(nz, n)`` slice sums times ``scale`` [1/pixel] into
    ``img`` ``(max(n, nz), 3 n)`` float32: Z | Y | X, top-aligned; padding left alone."""
    z, y, x = sums
    n, nz = z.shape[0], y.shape[0]
    xp.multiply(z, scale, out=img[:n, :n], casting="unsafe")
    xp.multiply(y, scale, out=img[:nz, n:2 * n], casting="unsafe")
    xp.multiply(x, scale, out=img[:nz, 2 * n:], casting="unsafe")


def _numpy(reason: str) -> NumpyBackend:
    import scipy.ndimage

    from tomostream.recon import _cpu_kernels

    return NumpyBackend("numpy", reason, np, _cpu_kernels, scipy.ndimage, "CPU")


def _cupy() -> CupyBackend:
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
    return CupyBackend("cupy", "", cp, _gpu_kernels, cupyx.scipy.ndimage, f"{name} (device {dev.id})",
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
