"""``OrthoReconstructor``: three orthogonal slices kept reconstructed from the last 180 degrees.

Per frame (:mod:`.pipeline`): dark/flat normalisation, optional dezinger and Paganin phase
retrieval, ``-log``, optional ring removal (:mod:`.rings`), row filtering, on the backend's
device (:mod:`.backend`: NumPy/numba or CuPy); the filtered frame goes into the slot of
its angle modulo 180 degrees (one frame per slot, a newer frame replaces the older).
Unnormalised slice sums (:mod:`.slices`) are updated by subtracting the replaced frame's
backprojection and adding the new one's (work per frame, not per buffer); the slices are those
sums times ``pi / filled``. Parameter changes invalidate lazily: the next
:meth:`OrthoReconstructor.slices` re-processes raw frames (dark, flat, filter, dezinger,
phase, ring removal) or only re-backprojects the filtered buffer (center, ortho, rot, zoom).
"""

from __future__ import annotations

import math

import numpy as np

from tomostream.errors import BadParameter
from tomostream.recon.backend import Backend, cpu_backend, select_backend
from tomostream.recon.center import find_seam, frame_rows, seam_center
from tomostream.recon.geometry import crossing_pixels
from tomostream.recon.inputs import (
    FRAME_DTYPES,
    check_field,
    check_frames,
    chunk_size,
    last_per_slot,
    pack_frames,
    slots_of,
)
from tomostream.recon.memory import batch_size, check_room
from tomostream.recon.params import ReconParams, default_params
from tomostream.recon.pipeline import FramePipeline
from tomostream.recon.slices import SliceSums

__all__ = ["FRAME_DTYPES", "OrthoReconstructor", "chunk_size"]


class OrthoReconstructor:
    """Streaming filtered-backprojection of three orthogonal slices (parallel beam).

    Parameters
    ----------
    width, height : int [pixels]
        Detector columns ``n`` and rows ``nz``.
    buffer_size : int
        Angular slots over 180 degrees (slot width ``180 / buffer_size`` degrees).
    backend : {"auto", "numpy", "cupy"} or Backend
        See :func:`~tomostream.recon.backend.select_backend`.
    rebuild_every : int, optional
        Recompute the slices from scratch after this many incremental frame updates, so
        rounding never accumulates (default ``8 * buffer_size``; 0 never).
    batch : int, optional
        Frames processed together (default, at most 32: what fits 512 MiB of work space on the
        CPU, an eighth of the free device memory up to 4 GiB on a GPU).

    Attributes
    ----------
    backend : str
        Name of the backend in use (``"numpy"`` after a fall-back from the GPU).
    backend_reason : str
        Why it is used, including the last change forced by a device failure.
    degradations : list of str
        Each device failure (out of memory, CUDA error) and the answer to it, oldest first:
        batches halved down to one frame, then the NumPy backend (buffers copied to the host
        and re-processed there). The reconstruction goes on either way.

    Raises
    ------
    BadParameter
        Invalid sizes, or a GPU buffer that does not fit the free device memory.
    BackendUnavailable
        ``backend="cupy"`` without CuPy or a device.
    """

    def __init__(self, width: int, height: int, buffer_size: int, backend: str = "auto", *,
                 rebuild_every: int | None = None, batch: int | None = None) -> None:
        for name, v in (("width", width), ("height", height), ("buffer_size", buffer_size)):
            if not isinstance(v, int | np.integer) or v < 1:
                raise BadParameter(f"{name}={v!r} must be a positive integer")
        self.width, self.height, self.buffer_size = int(width), int(height), int(buffer_size)
        self.rebuild_every = 8 * self.buffer_size if rebuild_every is None else int(rebuild_every)
        self._requested_batch = batch
        #: What went wrong on the device and what was done about it, oldest first.
        self.degradations: list[str] = []
        self._angle = np.full(self.buffer_size, np.nan)
        self._counts = {"frames": 0, "replaced": 0, "rebuilds": 0, "reprocessed": 0}
        self._params = default_params(self.width, self.height)
        be = select_backend(backend)
        try:
            self._allocate(be)
        except be.failures as exc:
            if be.name == "numpy":
                raise
            self._allocate(self._fallback_backend(be, exc, "allocating the buffers"))
        self._since_rebuild = 0

    def _allocate(self, be: Backend) -> None:
        """Take backend ``be`` and allocate empty buffers on its device."""
        self._be = be
        self.backend, self.backend_reason = be.name, be.reason
        n, nz = self.width, self.height
        free = be.free_bytes()
        self._batch = int(self._requested_batch or batch_size(n, nz, free))
        check_room(n, nz, self.buffer_size, self._batch, free, be.device)
        self._stream = be.stream()
        with self._stream:
            self._filt = be.kernels.frame_buffer(self.buffer_size, nz, n)
            self._raw = None
            self._pipe = FramePipeline(be, n, nz, self.buffer_size)
            self._sums = SliceSums(be, n, nz)
            self._bad = be.counter()
        self._uploader = be.uploader(self._batch, (nz, n), self._stream)
        self._image = None                                  # device image (see image())
        #: Largest pixel of the last image() when it was found on the device, else None.
        self.peak: float | None = None
        self._stale_processing = False
        self._stale_sums = False

    def _resize_uploader(self, batch: int) -> bool:
        """Staging buffers for batches of ``batch`` frames (GPU); whether the device had room."""
        self._uploader = None                      # its device memory goes back to the pool first
        try:
            self._uploader = self._be.uploader(batch, (self.height, self.width), self._stream)
        except self._be.failures:
            return False
        return True

    def _fallback_backend(self, be: Backend, exc: BaseException, doing: str) -> Backend:
        """The NumPy backend after ``be`` failed with ``exc`` while ``doing``; noted."""
        note = (f"{be.name} on {be.device} failed while {doing} ({type(exc).__name__}: {exc}); "
                f"using NumPy on the CPU")
        self.degradations.append(note)
        return cpu_backend(note)

    def _degrade(self, exc: BaseException, doing: str) -> None:
        """Answer a device failure: halve the batch, else move to the CPU, else re-raise ``exc``.

        The buffers stay consistent: sums are rebuilt from the frames before the next image,
        and on a move to the CPU the raw frames, dark and flat are copied over (when the
        device still lets them be read) and re-processed there.
        """
        be = self._be
        self._stale_sums = True                      # a failed step may have left sums half-updated
        if self._batch > 1 and self._resize_uploader(self._batch // 2):
            old, self._batch = self._batch, self._batch // 2
            note = (f"{type(exc).__name__} on {be.name} while {doing} with batches of {old}: "
                    f"batches of {self._batch} now")
            self.degradations.append(note)
            self.backend_reason = f"{be.reason}; {note}"
            return
        if be.name == "numpy":
            raise exc
        raw, dark, flat, bad = (be.rescue(a) for a in (self._raw, self._pipe.dark, self._pipe.flat,
                                                        self._bad))
        self._allocate(self._fallback_backend(be, exc, doing))
        if raw is None:
            self._angle[:] = np.nan                  # the frames are lost with the device
        else:
            self._raw = raw
        if dark is not None and flat is not None:
            self._pipe.dark, self._pipe.flat = dark, flat
        if bad is not None:
            self._bad[:] = bad.astype(np.int64)
        self._stale_processing = True
        self._stale_sums = True

    # ------------------------------------------------------------------ public state
    @property
    def params(self) -> ReconParams:
        """The current parameters (frozen)."""
        return self._params

    @property
    def filled(self) -> int:
        """Number of occupied slots."""
        return int(np.count_nonzero(self.occupied))

    @property
    def occupied(self) -> np.ndarray:
        """Which slots hold a frame: bool ``(buffer_size,)``, a copy."""
        return ~np.isnan(self._angle)

    @property
    def up_to_date(self) -> bool:
        """Whether the slices follow the buffer frame by frame: no re-processing of the buffer
        and no rebuild of the slices is pending."""
        return not (self._stale_processing or self._stale_sums)

    @property
    def compute_backend(self) -> Backend:
        """The backend in use (array module, kernels, device); :attr:`backend` is its name."""
        return self._be

    @property
    def pipeline(self) -> FramePipeline:
        """The per-frame processing in use: dark and flat fields, stripe estimate, absorption."""
        return self._pipe

    @property
    def raw_frames(self):
        """The raw frame buffer ``(buffer_size, height, width)`` on the device, None before the
        first push: to read, never to write."""
        return self._raw

    @property
    def stream(self):
        """The context the engine queues its device work in (a CUDA stream; nothing on the CPU)."""
        return self._stream

    @property
    def stats(self) -> dict:
        """Counters: frames, replaced, nonfinite_pixels, rebuilds, reprocessed."""
        with self._stream:
            bad = int(self._be.to_host(self._bad)[0])
        return {**self._counts, "nonfinite_pixels": bad, "filled": self.filled}

    # ------------------------------------------------------------------ inputs
    def set_dark(self, dark) -> None:
        """Dark field ``(height, width)`` [counts], any real dtype."""
        a = check_field("dark", dark, (self.height, self.width))
        with self._stream:
            self._pipe.dark = self._be.asarray(a)
        self._stale_processing = True

    def set_flat(self, flat) -> None:
        """Flat (white) field ``(height, width)`` [counts], any real dtype."""
        a = check_field("flat", flat, (self.height, self.width))
        with self._stream:
            self._pipe.flat = self._be.asarray(a)
        self._stale_processing = True

    def set_params(self, **changes) -> None:
        """Change parameters (keyword-only, any subset of :class:`ReconParams` fields).

        Raises
        ------
        BadParameter
            Unknown name or invalid value; nothing is changed then.
        """
        new = self._params.replace(self.width, self.height, **changes)
        old, self._params = self._params, new
        changed = {k for k in ReconParams.__dataclass_fields__ if getattr(old, k) != getattr(new, k)}
        if changed & set(ReconParams.PROCESSING):
            self._stale_processing = True
        if changed & {"center", "ortho", "rot", "zoom"}:
            self._stale_sums = True

    def reset(self) -> None:
        """Empty the buffer; parameters, dark and flat stay."""
        self._angle[:] = np.nan
        with self._stream:
            self._sums.clear()
        self._stale_sums = False
        self._since_rebuild = 0

    # ------------------------------------------------------------------ processing
    def _ensure_raw(self, dtype: np.dtype) -> None:
        store = np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.uint16)
        if self._raw is not None and (self._raw.dtype == store or self._raw.dtype == np.float32):
            return
        xp = self._be.xp
        shape = (self.buffer_size, self.height, self.width)
        if self._raw is None:
            self._raw = xp.zeros(shape, dtype=store)
            return
        old, self._raw = self._raw, None                   # uint16 -> float32 promotion
        del old
        self._raw = xp.zeros(shape, dtype=np.float32)
        self._angle[:] = np.nan                            # old raw frames were dropped
        self._stale_sums = True

    def push(self, frames, angles) -> None:
        """Add projections.

        Parameters
        ----------
        frames : ndarray (k, height, width) or (height, width), uint8 / uint16 / float32 [counts]
        angles : array_like (k,) [degrees]
            Rotation angle of each frame; any value (continuous rotation, back-and-forth).

        Raises
        ------
        BadFrame
            Wrong shape or dtype; the buffer is unchanged.
        BadParameter
            Angles of the wrong length or not finite; the buffer is unchanged.
        """
        frames, angles = check_frames(frames, angles, (self.height, self.width))
        slots = slots_of(angles, self.buffer_size)
        sel = last_per_slot(slots, self.buffer_size)      # several for one slot: the last counts
        self._counts["replaced"] += int(angles.size - sel.size)
        self._counts["frames"] += int(angles.size)
        start = 0                                              # frames of `sel` pushed so far
        while True:
            try:
                with self._stream:
                    self._ensure_raw(frames.dtype)
                    while start < sel.size:
                        part = sel[start:start + chunk_size(sel.size - start, self._batch)]
                        size = part.size
                        if part[-1] - part[0] == part.size - 1:    # contiguous: a view, no copy
                            part = slice(part[0], part[-1] + 1)
                        self._push_batch(frames[part], angles[part], slots[part])
                        start += size
                    self._uploader.wait()                      # the caller may reuse `frames` now
                return
            except self._be.failures as exc:                   # retried from the failed batch
                self._degrade(exc, "adding frames")

    def _push_batch(self, frames: np.ndarray, angles: np.ndarray, slots: np.ndarray) -> None:
        old = ~np.isnan(self._angle[slots])
        self._counts["replaced"] += int(old.sum())
        incremental = self.up_to_date
        table_old = pack_frames(slots[old], self._angle[slots[old]], -1.0)
        table_new = pack_frames(slots, angles, 1.0)
        (dev, m_old, m_new), token = self._uploader.upload(frames, table_old, table_new)
        if incremental and old.any():
            self._sums.add(self._filt, m_old, self._params)
        xp_slots = m_new[:slots.size]
        if self._params.ring_removal != "none" and self._pipe.stripes.track(
                self._raw, self.occupied, slots, m_old[:int(old.sum())], dev):
            self._stale_processing, incremental = True, False     # the whole buffer corrected again
        self._raw[xp_slots] = dev
        self._filt[xp_slots] = self._pipe.process(dev, self._params, self._bad)
        if incremental:
            self._sums.add(self._filt, m_new, self._params)
        self._uploader.release(token)
        self._angle[slots] = angles
        self._since_rebuild += slots.size
        if self.rebuild_every and self._since_rebuild >= self.rebuild_every:
            self._stale_sums = True

    # ------------------------------------------------------------------ outputs
    def _refresh(self) -> None:
        occupied = np.nonzero(self.occupied)[0]
        if self._stale_processing:
            if self._params.ring_removal != "none":
                self._pipe.stripes.sync(self._raw, self.occupied)
            scratch = self._be.counter()                          # already counted at push
            for start in range(0, occupied.size, self._batch):
                s = self._be.asarray(occupied[start:start + self._batch].astype(np.int32))
                self._filt[s] = self._pipe.process(self._raw[s], self._params, scratch)
            self._counts["reprocessed"] += int(occupied.size)
            self._stale_processing = False
            self._stale_sums = True
        if self._stale_sums:
            self._sums.clear()
            if occupied.size:
                table = self._be.asarray(pack_frames(occupied, self._angle[occupied], 1.0))
                self._sums.add(self._filt, table, self._params)
            self._counts["rebuilds"] += 1
            self._stale_sums = False
            self._since_rebuild = 0

    def host_frames(self, count: int, dtype=np.uint16) -> np.ndarray:
        """An empty ``(count, height, width)`` host array that :meth:`push` reads fastest.

        On a GPU it is page-locked, so a push copies it to the device directly instead of
        through a staging copy; fill it (``np.stack(frames, out=...)``) and push it. It may be
        refilled as soon as :meth:`push` returns.
        """
        return self._be.empty_host((int(count), self.height, self.width), np.dtype(dtype))

    def estimate_center(self) -> float:
        """The rotation axis found from the buffered frames [pixels, detector column, as
        ``params.center``]: the frames that close the 180-degree half turn against the mirror
        images of those that open it (:mod:`.center`), normalised with the dark and flat fields
        (``-log``, no filter). NaN until the buffer covers 180 degrees, and where the two sides
        do not show one sample. Runs on the device and stream of the pushes: call it from the
        thread that pushes.
        """
        seam = find_seam(self._angle)
        if seam is None or self._raw is None:
            return math.nan
        be = self._be
        try:
            with self._stream:
                slots, rows = be.asarray(seam.slots), be.asarray(frame_rows(self.height))
                out = self._pipe.log_rows(self._raw[slots[:, None], rows[None, :]], rows)
                return seam_center(out, seam, be.xp)
        except be.failures:             # the next push or image meets the failure and degrades
            return math.nan

    def synchronize(self) -> None:
        """Wait until all queued device work is done (no-op on the CPU)."""
        self._be.synchronize(self._stream)

    def _from_sums(self, use):
        """``use(scale)`` once the sums are up to date (``scale`` turns them into slices
        [1/pixel]); after a device failure the engine degrades and it runs again."""
        while True:
            try:
                with self._stream:
                    self._refresh()
                    return use(math.pi / self.filled if self.filled else 0.0)
            except self._be.failures as exc:
                self._image = None                  # its device memory back before the retry
                self._degrade(exc, "computing the slices")

    def slices(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The Z ``(n, n)``, Y ``(nz, n)`` and X ``(nz, n)`` slices [1/pixel], float32 NumPy arrays."""
        return self._from_sums(self._sums.to_host)

    @property
    def crossing(self) -> tuple[int, int, int]:
        """Where the slices cross in :meth:`image` [pixels]: ``(ix, iy, iz)`` as ``ortho``, at
        their zoomed place (``ortho`` itself at zoom 1)."""
        p = self._params
        return crossing_pixels(self.width, self.height, p.ortho, p.zoom)

    @property
    def image_shape(self) -> tuple[int, int]:
        """Shape of :meth:`image`: ``(max(n, nz), 3 n)``."""
        return max(self.width, self.height), 3 * self.width

    def image(self, out: np.ndarray | None = None) -> np.ndarray:
        """The three slices side by side, ``(max(n, nz), 3 n)`` float32: Z | Y | X (top-aligned).

        ``out``: an array of that shape and dtype to fill (and return) instead of a new one; a
        caller publishing 2048^2 slices several times a second saves a 50 MB allocation each time.
        On a GPU the image is assembled there and copied to ``out`` in one transfer (2048^2 on
        an H100 host: 4 ms into ordinary memory, against 11 ms for three slices put together on
        the host), and :attr:`peak` is set to its largest pixel (None where some pixel is not
        finite, and on the CPU, where finding it would be a pass over the image).
        """
        shape = self.image_shape
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise BadParameter(f"out has shape {out.shape} {out.dtype}, expected {shape} float32, "
                               "C-contiguous")

        def assemble(scale: float) -> np.ndarray:
            self.peak, self._image = self._be.assemble(self._sums.arrays, scale, out, self._image)
            return out

        return self._from_sums(assemble)
