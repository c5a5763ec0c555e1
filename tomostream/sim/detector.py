"""The simulated detector: projections of an analytic phantom in detector counts, fast.

A frame is ``dark + open_beam * exp(-p) (+ noise)`` [counts], with ``p`` the exact
parallel-beam line integral of the phantom (:func:`tomostream.recon.phantom.project`) and
``open_beam = gain * beam_profile * intensity`` (fixed detector gain pattern, a beam profile
that falls off towards the top and bottom, and the open-beam intensity). Flat frames are
``dark + open_beam``; projections may carry, on top, a per-column gain the flat field does not
record (``column_errors``): after flat-field normalisation those columns stay too bright or too
dark at every angle, vertical stripes in the sinogram that reconstruct as rings.

Exact projections cost ~20 ms per 512^2 frame, far too slow for 200 frames/s, so the
noiseless frames are computed once on the scan's angle grid (angles modulo 360) and cached
in the output dtype. Per frame the simulator then only

- picks the cached frame (the nearest cached angle if the grid is larger than the cache),
- re-computes the few rows and columns the changing inclusion covers,
- adds noise: Poisson statistics in the Gaussian approximation,
  ``sqrt(signal * intensity / photons + read_noise**2) * z``, with ``z`` a view into a pool
  of pre-drawn standard normal numbers at a random offset,
- adds zingers (single saturated pixels) at a fraction of the pixels,
- bins (mean of b x b blocks) when asked.

The per-pixel functions (column gains, the fused noise pass, binning) are in :mod:`.response`.

The sample stages and the lens (:mod:`.pose`) move and magnify the phantom: ``pose`` is
set by the beamline before each frame. Frames are cached for one pose; while the pose differs
from the cached one (a stage moving, a new lens), frames are computed exactly, one by one,
until :meth:`FrameSource.prepare` has cached the new pose's frames.

``photons = 0`` gives noiseless frames (and no zingers unless asked), so tests can compare
frames with the analytic projections exactly (to the rounding to integer counts).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import BadParameter
from ..recon.phantom import Ellipsoid, default_phantom, project, reach
from .pose import Pose
from .response import bin_frame, column_gain, fused_noise
from .scan import Inclusion

DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "float32": np.float32}
#: Open-beam intensity and dark level per dtype [counts].
_DEFAULT_INTENSITY = {"uint8": 180.0, "uint16": 20000.0, "float32": 1000.0}
_DEFAULT_DARK = {"uint8": 4.0, "uint16": 100.0, "float32": 10.0}
MAX_SIDE = 4096
BINNINGS = (1, 2, 4)
ANGLE_KEY = 1e-6   # cached angles are equal when they agree to a micro-degree


@dataclass(frozen=True)
class DetectorOptions:
    """Everything that shapes the simulated frames.

    Parameters
    ----------
    width, height : int [pixels]
        Frame size before binning (divisible by 4 so every binning applies).
    dtype : {"uint16", "uint8", "float32"}
    intensity : float [counts], optional
        Open-beam counts above dark at the beam centre; a dtype-dependent default.
    dark_level : float [counts], optional
        Mean dark offset; a dtype-dependent default.
    photons : float [photons per pixel]
        Photons of the open beam per pixel and frame; sets the noise. 0 = noiseless.
    read_noise : float [counts]
        Standard deviation of the dark noise (ignored when ``photons`` is 0).
    zingers : float
        Fraction of pixels per frame hit by a zinger (0 = none).
    center : float [pixels], optional
        Detector column of the rotation axis, in the reconstruction's convention (a point on
        the axis projects onto it); ``width / 2`` by default. Any column that keeps the whole
        sample (phantom and inclusion) in the field.
    column_errors : float [fraction of the columns]
        Miscalibrated detector: this fraction of the columns (fixed, chosen at random) have in
        the projections a gain error the flat field does not see, 2% to 10%; 0 = none. See
        :func:`~tomostream.sim.response.column_gain`.
    inclusion : Inclusion or None
        The part of the sample that changes during the scan.
    phantom : sequence of Ellipsoid, optional
        The static sample; :func:`default_phantom` by default.
    cache_mb : float [MiB]
        Memory for cached noiseless frames; when the scan's angle grid needs more, frames
        use the nearest of an even grid of that many angles.
    seed : int
        Seed of every random pattern (gain, noise pool, zingers).
    """

    width: int = 512
    height: int = 512
    dtype: str = "uint16"
    intensity: float | None = None
    dark_level: float | None = None
    photons: float = 0.0
    read_noise: float = 2.0
    zingers: float = 0.0
    center: float | None = None
    column_errors: float = 0.0
    inclusion: Inclusion | None = None
    phantom: Sequence[Ellipsoid] | None = field(default=None, compare=False)
    cache_mb: float = 512.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            v = getattr(self, name)
            if not 4 <= v <= MAX_SIDE or v % 4:
                raise BadParameter(f"{name}={v} must be a multiple of 4 in 4..{MAX_SIDE} pixels")
        if self.dtype not in DTYPES:
            raise BadParameter(f"dtype={self.dtype!r} is not one of {tuple(DTYPES)}")
        for name in ("photons", "read_noise", "zingers", "cache_mb", "column_errors"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0:
                raise BadParameter(f"{name}={v} must be a finite number >= 0")
        if self.zingers > 0.1:
            raise BadParameter(f"zingers={self.zingers} is a fraction of pixels, at most 0.1")
        if self.column_errors > 1:
            raise BadParameter(f"column_errors={self.column_errors} is a fraction of the columns, "
                               f"at most 1")
        self._check_center()

    def _check_center(self) -> None:
        """The sample, turning about column ``center``, must stay within the detector."""
        center = self.width / 2.0 if self.center is None else self.center
        if not np.isfinite(center):
            raise BadParameter(f"center={self.center} is not a finite column [pixels]")
        parts = list(self.phantom) if self.phantom is not None else default_phantom(self.width, self.height)
        inc = self.inclusion
        if inc is not None:                  # it moves and grows linearly: its ends reach farthest
            parts += [e for e in (inc.at(inc.start_frame), inc.at(inc.start_frame + inc.frames))
                      if e is not None]
        r = reach(parts)
        if not r <= center <= self.width - r:
            raise BadParameter(f"center={center:g} pixels puts the sample (reaching {r:.1f} pixels "
                               f"from the axis) out of the {self.width}-pixel field: the axis must "
                               f"be in {r:.1f}..{self.width - r:.1f}")


class FrameSource:
    """Makes dark, flat and projection frames of the simulated detector.

    Parameters
    ----------
    options : DetectorOptions

    Notes
    -----
    ``prepare`` fills the cache (slow, once per angle grid); the per-frame methods are fast
    and may be called from one acquisition thread while ``prepare`` runs in another.
    """

    def __init__(self, options: DetectorOptions):
        self.options = o = options
        self.dtype = np.dtype(DTYPES[o.dtype])
        self.phantom = list(o.phantom) if o.phantom is not None else default_phantom(o.width, o.height)
        self.center = o.width / 2.0 if o.center is None else float(o.center)
        self.intensity = _DEFAULT_INTENSITY[o.dtype] if o.intensity is None else float(o.intensity)
        dark_level = _DEFAULT_DARK[o.dtype] if o.dark_level is None else float(o.dark_level)
        rng = np.random.default_rng(o.seed)
        h, w = o.height, o.width
        v = (np.arange(h) - h / 2.0) / h
        u = (np.arange(w) - w / 2.0) / w
        beam = np.exp(-0.5 * (v[:, None] / 0.45) ** 2) * (1.0 - 0.15 * u[None, :] ** 2)
        gain = 1.0 + 0.02 * rng.standard_normal((h, w)) + 0.01 * np.sin(np.arange(w) / 3.0)[None, :]
        #: counts above dark in the open beam, as flat frames see it (float32, (height, width))
        self.open_beam = (self.intensity * beam * gain).astype(np.float32)
        #: the open beam as projections see it: with the column gain errors the flat misses
        self.sample_beam = self.open_beam * column_gain(w, o.column_errors, o.seed)
        #: dark offset (float32, (height, width))
        self.dark = (dark_level * (1.0 + 0.05 * rng.standard_normal((h, w)))).clip(0).astype(np.float32)
        noisy = o.photons > 0
        self.noisy = noisy
        self._gain2 = np.float32(self.intensity / o.photons) if noisy else np.float32(0)
        self._read2 = np.float32(o.read_noise ** 2) if noisy else np.float32(0)
        npix = h * w
        self._pool = rng.standard_normal(npix + max(npix // 2, 4096)).astype(np.float32) if noisy else None
        self._rng = np.random.default_rng(o.seed + 1)
        self._lock = threading.Lock()
        self._angles = np.zeros(0)            # sorted cached angles [degrees, 0..360)
        self._frames = np.zeros((0, h, w), self.dtype)
        self.capacity = max(1, int(o.cache_mb * 2**20 // (npix * self.dtype.itemsize)))
        self.exact = True                      # False when the cache holds a coarser grid
        #: Where the stages and the lens put the sample now (set by the beamline).
        self.pose = Pose()
        self._cache_pose = Pose()              # the pose of the cached frames

    # ------------------------------------------------------------------ cache
    def prepare(self, angles: np.ndarray, progress: Callable[[int, int], None] | None = None,
                workers: int = 2) -> None:
        """Compute the noiseless frames for ``angles`` [degrees] (modulo 360) and cache them.

        Angles already cached for the current pose are reused. If more distinct angles are
        needed than ``capacity`` frames, an even grid of ``capacity`` angles over 360 degrees is
        cached instead and ``exact`` becomes False. The frames are those of :attr:`pose` when
        the call began.
        """
        pose = self.pose
        keys = np.round(np.mod(np.asarray(angles, np.float64), 360.0) / ANGLE_KEY)
        wanted = np.unique(np.mod(keys * ANGLE_KEY, 360.0))
        exact = wanted.size <= self.capacity
        if not exact:
            wanted = np.arange(self.capacity) * (360.0 / self.capacity)
        with self._lock:
            have_angles, have_frames = self._angles, self._frames
            if self._cache_pose != pose:
                have_angles = have_angles[:0]
        idx = np.searchsorted(have_angles, wanted)
        hit = np.zeros(wanted.size, bool)
        if have_angles.size:
            ok = idx < have_angles.size
            hit[ok] = np.abs(have_angles[idx[ok]] - wanted[ok]) < ANGLE_KEY / 2
        frames = np.empty((wanted.size, self.options.height, self.options.width), self.dtype)
        frames[hit] = have_frames[idx[hit]]
        todo = np.nonzero(~hit)[0]
        chunk = max(1, 2**21 // (self.options.width * self.options.height))
        chunks = [todo[i:i + chunk] for i in range(0, todo.size, chunk)]
        done = 0

        def compute(sel: np.ndarray) -> np.ndarray:
            frames[sel] = self._to_dtype(self._counts(wanted[sel], pose))
            return sel

        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="sim-prepare") as pool:
            for sel in pool.map(compute, chunks):
                done += sel.size
                if progress is not None:
                    progress(done, todo.size)
        with self._lock:
            self._angles, self._frames, self.exact, self._cache_pose = wanted, frames, exact, pose

    def _scene(self, pose: Pose, extra: Sequence[Ellipsoid] = ()) -> tuple[list[Ellipsoid], float]:
        """The phantom (and ``extra`` ellipsoids) placed by ``pose``, and the axis column."""
        return pose.place([*self.phantom, *extra]), pose.axis(self.center, self.options.width)

    def _counts(self, angles, pose: Pose, extra: Sequence[Ellipsoid] = ()) -> np.ndarray:
        """Exact noiseless projections [counts] at ``angles`` [degrees] of the phantom (and
        ``extra``) placed by ``pose``: float32, (len(angles), height, width)."""
        ellipsoids, center = self._scene(pose, extra)
        p = project(ellipsoids, np.atleast_1d(angles), self.options.width, self.options.height, center)
        return self.dark + self.sample_beam * np.exp(-p)

    @property
    def cached_pose(self) -> Pose:
        """The pose of the cached frames."""
        return self._cache_pose

    @property
    def cached_angles(self) -> np.ndarray:
        """Angles of the cached frames [degrees, 0..360), sorted."""
        return self._angles

    def _nearest(self, theta: float) -> tuple[float, np.ndarray]:
        """The cached angle nearest ``theta`` and its frame."""
        with self._lock:
            angles, frames = self._angles, self._frames
        if angles.size == 0:
            raise BadParameter("no frames prepared: call prepare(angles) first")
        a = float(np.mod(theta, 360.0))
        i = int(np.searchsorted(angles, a))
        lo, hi = (i - 1) % angles.size, i % angles.size
        d_lo = abs((a - angles[lo] + 180.0) % 360.0 - 180.0)
        d_hi = abs((angles[hi] - a + 180.0) % 360.0 - 180.0)
        j = lo if d_lo <= d_hi else hi
        return float(angles[j]), frames[j]

    def _cached(self, theta: float) -> np.ndarray:
        """The noiseless frame at ``theta`` for the current pose: cached, else computed."""
        pose = self.pose
        if pose == self._cache_pose:
            return self._nearest(theta)[1]
        return self._to_dtype(self._counts(theta, pose)[0])

    def repeat_key(self, theta: float, k: int = 0, binning: int = 1) -> float | None:
        """Which cached frame ``projection(theta, k, binning)`` returns unchanged, if it does.

        With no noise, zingers, inclusion at frame ``k`` or binning, a projection is the cached
        noiseless frame of the nearest cached angle, the same pixels every time that angle
        comes round: that angle is returned, so a publisher may build the frame's NTNDArray
        once and re-send it. None when the frame is made anew.
        """
        o = self.options
        if binning != 1 or self.noisy or o.zingers or (o.inclusion is not None
                                                        and o.inclusion.at(k) is not None):
            return None
        if self.pose != self._cache_pose:
            return None
        return self._nearest(theta)[0]

    # ------------------------------------------------------------------ frames
    def _to_dtype(self, counts: np.ndarray) -> np.ndarray:
        if self.dtype.kind == "f":
            return np.asarray(counts, dtype=self.dtype)
        top = np.iinfo(self.dtype).max
        return np.clip(np.rint(counts), 0, top).astype(self.dtype)

    def _noise(self, signal: np.ndarray) -> np.ndarray:
        """Noise [counts] for ``signal`` counts above dark (same shape, float32)."""
        n = signal.size
        off = int(self._rng.integers(0, self._pool.size - n + 1))
        z = self._pool[off:off + n].reshape(signal.shape)
        var = np.maximum(signal, 0, dtype=np.float32)
        var *= self._gain2
        var += self._read2
        np.sqrt(var, out=var)
        var *= z
        return var

    def _add_noise(self, clean: np.ndarray) -> np.ndarray:
        """``clean`` (detector dtype) plus noise, as a new array of the dtype (one fused pass)."""
        n = clean.size
        off = int(self._rng.integers(0, self._pool.size - n + 1))
        out = np.empty_like(clean)
        top = float(np.iinfo(self.dtype).max) if self.dtype.kind in "ui" else 0.0
        fused_noise(clean.reshape(-1), self.dark.reshape(-1), self._pool[off:off + n], self._gain2,
                    self._read2, top, out.reshape(-1))
        return out

    def _add_zingers(self, frame: np.ndarray) -> None:
        """Saturate-add a zinger (1.5 x intensity) to a random fraction of the pixels, in place."""
        m = self._rng.binomial(frame.size, self.options.zingers)
        idx = self._rng.integers(0, frame.size, m)
        flat = frame.reshape(-1)
        hit = flat[idx].astype(np.float64) + 1.5 * self.intensity
        if self.dtype.kind in "ui":
            hit = np.minimum(np.rint(hit), np.iinfo(self.dtype).max)
        flat[idx] = hit.astype(self.dtype)

    def _finish(self, counts: np.ndarray, dark: np.ndarray, binning: int, zingers: bool) -> np.ndarray:
        """Add noise and zingers to float32 ``counts``, bin and convert to the dtype."""
        if self.noisy:
            counts += self._noise(counts - dark)
        if zingers and self.options.zingers > 0:
            m = self._rng.binomial(counts.size, self.options.zingers)
            flat = counts.reshape(-1)
            flat[self._rng.integers(0, counts.size, m)] += 1.5 * self.intensity
        return self._to_dtype(bin_frame(counts, binning))

    def projection(self, theta: float, k: int = 0, binning: int = 1) -> np.ndarray:
        """One projection frame at angle ``theta`` [degrees], frame ``k`` of the scan.

        Returns an array (height/binning, width/binning) of the detector dtype.
        """
        clean = self._cached(theta)
        inc = self.options.inclusion.at(k) if self.options.inclusion is not None else None
        if binning == 1:                  # the fast path: integer/float work in one pass
            owned = False                 # never modify the cached frame
            if inc is not None:
                clean, owned = clean.copy(), True
                self._draw_inclusion(clean, inc, theta)
            if self.noisy:
                clean, owned = self._add_noise(clean), True
            if self.options.zingers:
                clean = clean if owned else clean.copy()
                self._add_zingers(clean)
            return clean
        counts = clean.astype(np.float32)
        if inc is not None:
            self._draw_inclusion(counts, inc, theta)
        return self._finish(counts, self.dark, binning, zingers=True)

    def _draw_inclusion(self, counts: np.ndarray, inc: Ellipsoid, theta: float) -> None:
        """Replace the window the inclusion projects to with exact noiseless values including
        it (rounded to the detector dtype), in place."""
        h, w = counts.shape
        placed, center = self._scene(self.pose, (inc,))
        *phantom, inc = placed
        t = np.deg2rad(theta)
        uc = center + inc.x0 * np.cos(t) - inc.y0 * np.sin(t)
        vc = h / 2.0 + inc.z0
        r = inc.a + 1.0
        u0, u1 = max(0, int(np.floor(uc - r))), min(w, int(np.ceil(uc + r)) + 1)
        v0, v1 = max(0, int(np.floor(vc - r))), min(h, int(np.ceil(vc + r)) + 1)
        if u0 >= u1 or v0 >= v1:
            return
        hw, ww = v1 - v0, u1 - u0
        dz = v0 + hw / 2.0 - h / 2.0      # window rows are centred at hw/2, detector rows at h/2
        shifted = [Ellipsoid(e.x0, e.y0, e.z0 - dz, e.a, e.b, e.c, e.phi, e.mu)
                   for e in (*phantom, inc)]
        p = project(shifted, np.array([theta]), ww, hw, center=center - u0)[0]
        win = (slice(v0, v1), slice(u0, u1))
        counts[win] = self._to_dtype(self.dark[win] + self.sample_beam[win] * np.exp(-p))

    def dark_frame(self, binning: int = 1) -> np.ndarray:
        """One dark frame (beam off) of the detector dtype."""
        return self._finish(self.dark.copy(), self.dark, binning, zingers=False)

    def flat_frame(self, binning: int = 1) -> np.ndarray:
        """One flat frame (sample out of the beam) of the detector dtype."""
        return self._finish(self.dark + self.open_beam, self.dark, binning, zingers=True)

    def expected(self, theta: float, k: int = 0) -> np.ndarray:
        """Noiseless frame at ``theta`` [degrees] for the current pose, computed exactly (slow):
        float32 counts."""
        extra = []
        if self.options.inclusion is not None and (inc := self.options.inclusion.at(k)) is not None:
            extra.append(inc)
        return self._counts(theta, self.pose, extra)[0]
