"""``OrthoReconstructor``: three orthogonal slices kept reconstructed from the last 180 degrees.

Per frame: dark/flat normalisation, optional dezinger and Paganin phase retrieval, ``-log``,
optional ring removal (:mod:`.rings`), row filtering; the filtered frame goes into the slot of
its angle modulo 180 degrees (one frame per slot, a newer frame replaces the older).
Unnormalised slice sums are updated by subtracting the replaced frame's backprojection and
adding the new one's (work per frame, not per buffer); the slices are those sums times
``pi / filled``. Parameter changes invalidate lazily: the next
:meth:`OrthoReconstructor.slices` re-processes raw frames (dark, flat, filter, dezinger,
phase, ring removal) or only re-backprojects the filtered buffer (center, ortho, rot, zoom).
"""

from __future__ import annotations

import math

import numpy as np

from tomostream.errors import BadFrame, BadParameter
from tomostream.recon import paganin, rings
from tomostream.recon._cpu_kernels import MIN_TRANSMISSION
from tomostream.recon.backend import cpu_backend, select_backend
from tomostream.recon.center import find_seam, frame_rows, seam_center
from tomostream.recon.filters import filter_rows, filter_window, padded_length
from tomostream.recon.geometry import crossing_pixels, slice_points
from tomostream.recon.params import ReconParams, default_params

FRAME_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


def chunk_size(remaining: int, batch: int) -> int:
    """Frames in the next chunk of a push: a full ``batch``, else the largest power of two
    that fits. However the frames arrive, the device then sees a handful of chunk shapes (so
    a handful of FFT plans and work buffers), and its memory stops growing once it has met
    them all instead of growing with every new remainder size."""
    if remaining >= batch:
        return batch
    return 1 << (remaining.bit_length() - 1)


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

    def _allocate(self, be) -> None:
        """Take backend ``be`` and allocate empty buffers on its device."""
        self._be = be
        self.backend, self.backend_reason = be.name, be.reason
        n, nz, xp = self.width, self.height, be.xp
        frame_work = nz * padded_length(n) * 4 * 4          # padded rows, spectrum, temporaries
        free = be.free_bytes()
        work = 512 << 20 if free is None else min(4 << 30, free // 8)   # GPU: larger batches, fewer launches
        self._batch = int(self._requested_batch or max(1, min(32, work // frame_work)))
        self._check_memory(np.dtype(np.uint16))
        self._stream = be.stream()
        self._uploader = None
        with self._stream:
            self._filt = be.kernels.frame_buffer(self.buffer_size, nz, n)
            self._raw = None
            self._dark = xp.zeros((nz, n), dtype=xp.float32)
            self._flat = xp.ones((nz, n), dtype=xp.float32)
            self._sums = (xp.zeros((n, n)), xp.zeros((nz, n)), xp.zeros((nz, n)))
            self._bad = xp.zeros(1, dtype=xp.uint64 if self.backend == "cupy" else xp.int64)
            self._rings = rings.StripeEstimate(xp, be.ndimage, self.buffer_size, (nz, n))
        if self.backend == "cupy":
            item = 4 * (nz * n + 8 * self._batch + 1024)
            self._uploader = be.kernels.Uploader(self._batch * item, self._stream)
        self._window = None
        self._phase = None
        self._points = None
        self._image = None                                  # device image (see image())
        #: Largest pixel of the last image() when it was found on the device, else None.
        self.peak: float | None = None
        self._stale_processing = False
        self._stale_sums = False

    def _resize_uploader(self, batch: int) -> bool:
        """Staging buffers for batches of ``batch`` frames (GPU); whether the device had room."""
        if self._uploader is None:
            return True
        self._uploader = None                      # its device memory goes back to the pool first
        try:
            item = 4 * (self.height * self.width + 8 * batch + 1024)
            self._uploader = self._be.kernels.Uploader(batch * item, self._stream)
        except self._be.failures:
            return False
        return True

    def _fallback_backend(self, be, exc: BaseException, doing: str):
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
        host = {}
        for name in ("_raw", "_dark", "_flat", "_bad"):
            a = getattr(self, name)
            try:
                host[name] = None if a is None else np.array(be.to_host(a))
            except be.failures:                       # the device no longer answers
                host[name] = None
        self._allocate(self._fallback_backend(be, exc, doing))
        if host["_raw"] is None:
            self._angle[:] = np.nan                  # the frames are lost with the device
        else:
            self._raw = host["_raw"]
        if host["_dark"] is not None and host["_flat"] is not None:
            self._dark, self._flat = host["_dark"], host["_flat"]
        if host["_bad"] is not None:
            self._bad[:] = host["_bad"].astype(np.int64)
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
        return int(np.count_nonzero(~np.isnan(self._angle)))

    @property
    def stats(self) -> dict:
        """Counters: frames, replaced, nonfinite_pixels, rebuilds, reprocessed."""
        with self._stream:
            bad = int(self._be.to_host(self._bad)[0])
        return {**self._counts, "nonfinite_pixels": bad, "filled": self.filled}

    # ------------------------------------------------------------------ inputs
    def _field(self, name: str, a) -> np.ndarray:
        a = np.asarray(a)
        if a.shape != (self.height, self.width):
            raise BadFrame(f"{name} has shape {a.shape}, expected {(self.height, self.width)}")
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise BadFrame(f"{name} has dtype {a.dtype}, expected a real number type")
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise BadFrame(f"{name} contains {np.count_nonzero(~np.isfinite(a))} non-finite pixels")
        return a

    def set_dark(self, dark) -> None:
        """Dark field ``(height, width)`` [counts], any real dtype."""
        a = self._field("dark", dark)
        with self._stream:
            self._dark = self._be.asarray(a)
        self._stale_processing = True

    def set_flat(self, flat) -> None:
        """Flat (white) field ``(height, width)`` [counts], any real dtype."""
        a = self._field("flat", flat)
        with self._stream:
            self._flat = self._be.asarray(a)
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
            self._window = None
            self._phase = None
        if changed & {"center", "ortho", "rot", "zoom"}:
            self._stale_sums = True
        if changed & {"ortho", "rot", "zoom"}:
            self._points = None

    def reset(self) -> None:
        """Empty the buffer; parameters, dark and flat stay."""
        self._angle[:] = np.nan
        with self._stream:
            for s in self._sums:
                s.fill(0)
        self._stale_sums = False
        self._since_rebuild = 0

    # ------------------------------------------------------------------ processing
    def _check_memory(self, raw_dtype: np.dtype) -> None:
        free = self._be.free_bytes()
        if free is None:
            return
        n, nz, p = self.width, self.height, self.buffer_size
        need = p * nz * n * (4 + raw_dtype.itemsize) + self._batch * nz * padded_length(n) * 16 * 2 \
            + 3 * max(n, nz) * n * 8
        if need > 0.95 * free:
            raise BadParameter(f"buffer_size={p} of {n}x{nz} frames needs {need / 2**30:.1f} GiB on "
                               f"{self._be.device}, only {free / 2**30:.1f} GiB free")

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

    def _process(self, raw, bad):
        """Raw frames (k, nz, n) on the device -> filtered projections float32 (k, nz, n).

        ``bad`` (1-element device counter) accumulates the number of non-finite raw pixels.
        """
        out = self._absorption(raw, bad)
        if self._params.ring_removal != "none":
            self._rings.subtract(out, lambda mean: self._absorption(mean, self._be.xp.zeros_like(bad)),
                                 (self._params, self._dark, self._flat))
        if self._window is None:
            self._window = self._be.asarray(filter_window(self._params.filter, self.width))
        return filter_rows(out, self._window, self._be.xp, n=self.width)

    def _absorption(self, raw, bad):
        """Raw frames (k, nz, n) on the device -> ``-log`` of their transmission, float32
        (k, nz, n), or rows zero-padded for the filter's FFT (k, nz, padded_length(n))."""
        p, xp, k = self._params, self._be.xp, self._be.kernels
        if p.dezinger > 0:
            f = raw.astype(xp.float32)
            size = 2 * p.dezinger + 1
            med = self._be.ndimage.median_filter(f, size=(1, size, size), mode="nearest")
            raw = xp.where(f - med > p.dezinger_threshold * xp.abs(med), med, f)
        phase = p.alpha > 0
        # without phase retrieval the rows are normalised straight into the FFT's zero padding
        width = self.width if phase else padded_length(self.width)
        out = xp.empty(raw.shape[:2] + (width,), dtype=xp.float32)
        k.preprocess(raw, self._dark, self._flat, not phase, out, bad)
        if phase:
            if self._phase is None:
                shape = paganin.padded_shape(self.height, self.width)
                self._phase = self._be.asarray(paganin.paganin_filter(shape, p.energy, p.distance, p.alpha,
                                                                      p.pixel_size))
            t = paganin.apply_paganin(out, self._phase, xp)
            out = -xp.log(xp.maximum(t, MIN_TRANSMISSION))
        return out

    def _meta(self, slots: np.ndarray, angles: np.ndarray, weight: float) -> np.ndarray:
        """Slots, cos, sin and weights packed as int32 (floats bit-cast) for one upload."""
        t = np.deg2rad(angles)
        f = np.stack([np.cos(t), np.sin(t), np.full(t.size, weight)]).astype(np.float32)
        return np.concatenate([slots.astype(np.int32), f.view(np.int32).ravel()])

    def _backproject(self, meta) -> None:
        """Add the frames described by ``meta`` (from :meth:`_meta`) to the slice sums."""
        m = meta.size // 4
        idx, rest = meta[:m], meta[m:].view(self._be.xp.float32)
        cos_t, sin_t, w = rest[:m], rest[m:2 * m], rest[2 * m:]
        p, k = self._params, self._be.kernels
        if p.rot == (0.0, 0.0, 0.0) and p.zoom == 1.0:
            ix, iy, iz = p.ortho
            k.backproject_z(self._filt, idx, cos_t, sin_t, w, p.center, iz, self._sums[0])
            k.backproject_yx(self._filt, idx, cos_t, sin_t, w, p.center, iy, ix, self._sums[1], self._sums[2])
            return
        if self._points is None:
            pts = slice_points(self.width, self.height, p.ortho, p.rot, p.zoom)
            self._points = [self._be.asarray(a) for a in pts]
        for pts, s in zip(self._points, self._sums, strict=True):
            k.backproject_points(self._filt, idx, cos_t, sin_t, w, p.center, pts, s.reshape(-1))

    def _slots(self, angles: np.ndarray) -> np.ndarray:
        a = np.mod(angles, 180.0)
        return np.minimum((a * (self.buffer_size / 180.0)).astype(np.int64), self.buffer_size - 1)

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
        frames = np.asarray(frames)
        if frames.ndim == 2:
            frames = frames[None]
        if frames.ndim != 3 or frames.shape[1:] != (self.height, self.width):
            raise BadFrame(f"frames have shape {frames.shape}, expected (k, {self.height}, {self.width})")
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
        slots = self._slots(angles)
        # of several frames for one slot in this push only the last counts
        last = np.zeros(self.buffer_size, dtype=bool)
        keep = np.zeros(angles.size, dtype=bool)
        for i in range(angles.size - 1, -1, -1):
            if not last[slots[i]]:
                last[slots[i]] = keep[i] = True
        self._counts["replaced"] += int(angles.size - keep.sum())
        self._counts["frames"] += int(angles.size)
        sel = np.nonzero(keep)[0]
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
                    if self._uploader is not None:
                        self._uploader.wait()                  # the caller may reuse `frames` now
                return
            except self._be.failures as exc:                   # retried from the failed batch
                self._degrade(exc, "adding frames")

    def _push_batch(self, frames: np.ndarray, angles: np.ndarray, slots: np.ndarray) -> None:
        old = ~np.isnan(self._angle[slots])
        self._counts["replaced"] += int(old.sum())
        incremental = not (self._stale_sums or self._stale_processing)
        meta_old = self._meta(slots[old], self._angle[slots[old]], -1.0)
        meta_new = self._meta(slots, angles, 1.0)
        if self._uploader is not None:
            (dev, m_old, m_new), token = self._uploader.upload(frames, meta_old, meta_new)
        else:
            dev, m_old, m_new, token = frames, meta_old, meta_new, None
        if incremental and old.any():
            self._backproject(m_old)
        xp_slots = m_new[:slots.size]
        if self._params.ring_removal != "none" and self._rings.track(
                self._raw, ~np.isnan(self._angle), slots, m_old[:int(old.sum())], dev):
            self._stale_processing, incremental = True, False     # the whole buffer corrected again
        self._raw[xp_slots] = dev
        self._filt[xp_slots] = self._process(dev, self._bad)
        if incremental:
            self._backproject(m_new)
        if self._uploader is not None:
            self._uploader.release(token)
        self._angle[slots] = angles
        self._since_rebuild += slots.size
        if self.rebuild_every and self._since_rebuild >= self.rebuild_every:
            self._stale_sums = True

    # ------------------------------------------------------------------ outputs
    def _refresh(self) -> None:
        occupied = np.nonzero(~np.isnan(self._angle))[0]
        if self._stale_processing:
            if self._params.ring_removal != "none":
                self._rings.sync(self._raw, ~np.isnan(self._angle))
            scratch = self._be.xp.zeros_like(self._bad)          # already counted at push
            for start in range(0, occupied.size, self._batch):
                s = self._be.asarray(occupied[start:start + self._batch].astype(np.int32))
                self._filt[s] = self._process(self._raw[s], scratch)
            self._counts["reprocessed"] += int(occupied.size)
            self._stale_processing = False
            self._stale_sums = True
        if self._stale_sums:
            for s in self._sums:
                s.fill(0)
            if occupied.size:
                self._backproject(self._be.asarray(self._meta(occupied, self._angle[occupied], 1.0)))
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
                raw = self._raw[slots[:, None], rows[None, :]]
                out = be.xp.empty(raw.shape, dtype=be.xp.float32)
                be.kernels.preprocess(raw, self._dark[rows], self._flat[rows], True, out,
                                      be.xp.zeros_like(self._bad))
                return seam_center(out, seam, be.xp)
        except be.failures:             # the next push or image meets the failure and degrades
            return math.nan

    def synchronize(self) -> None:
        """Wait until all queued device work is done (no-op on the CPU)."""
        if self.backend == "cupy":
            self._stream.synchronize()

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
        return self._from_sums(lambda scale: tuple(
            self._be.to_host((s * scale).astype(self._be.xp.float32)) for s in self._sums))

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
        n, nz = self.width, self.height
        shape = self.image_shape
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise BadParameter(f"out has shape {out.shape} {out.dtype}, expected {shape} float32, "
                               "C-contiguous")

        def assemble(scale: float) -> np.ndarray:
            xp = self._be.xp
            on_host = self.backend != "cupy"
            if on_host:
                img = out
                out[n:, :n] = 0.0                   # below the Z slice when nz > n
                out[nz:, n:] = 0.0                  # below the vertical slices when n > nz
            else:                                   # padding zeroed once, never written
                if self._image is None or self._image.shape != shape:
                    self._image = xp.zeros(shape, dtype=xp.float32)
                img = self._image
            z, y, x = self._sums
            xp.multiply(z, scale, out=img[:n, :n], casting="unsafe")
            xp.multiply(y, scale, out=img[:nz, n:2 * n], casting="unsafe")
            xp.multiply(x, scale, out=img[:nz, 2 * n:], casting="unsafe")
            if on_host:
                self.peak = None
            else:
                top = img.max()
                img.get(out=out)                    # waits for the copy
                self.peak = float(top) if math.isfinite(float(top)) else None
            return out

        return self._from_sums(assemble)
