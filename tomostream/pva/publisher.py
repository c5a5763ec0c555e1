"""Serve the three orthogonal slices as one float32 NTNDArray.

Layout of the published image (height ``max(n, nz)``, width ``3 n``; see pv-names.md)::

    columns  [0, n)        [n, 2n)         [2n, 3n)
             Z slice       Y slice         X slice
             (n x n)       (nz x n, top)   (nz x n, top)

The Z slice is the horizontal plane at detector row ``iz``; its columns run along x and its
rows along y. The Y slice is the vertical plane at ``y = iy`` (rows = detector rows z,
columns = x) and the X slice the vertical plane at ``x = ix`` (rows = z, columns = y).

Thin marker lines show where the other slices cut each panel, as beamline users know them
from the original tomostream: in the Z panel a vertical line at ``ix`` and a horizontal one at
``iy``; in the Y panel a horizontal line at ``iz`` and a vertical one at ``ix``; in the X panel
a horizontal line at ``iz`` and a vertical one at ``iy``. They take the image maximum so they
stand out with any contrast setting.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import BadFrame, BadParameter
from .ntnda import INT32_MAX, INT32_MIN, to_ntnda
from .server import PvaChannels


def _check_markers(markers: tuple[int, int, int], n: int, nz: int) -> tuple[int, int, int]:
    ix, iy, iz = (int(m) for m in markers)
    for label, value, size in (("ix", ix, n), ("iy", iy, n), ("iz", iz, nz)):
        if not 0 <= value < size:
            raise BadParameter(f"marker {label}={value} is outside 0..{size - 1}")
    return ix, iy, iz


def draw_markers(image: np.ndarray, markers: tuple[int, int, int], n: int, nz: int,
                 value: float | None = None) -> None:
    """Draw the slice-crossing lines into ``image`` in place.

    Parameters
    ----------
    image : numpy.ndarray
        Ortho-slice image (max(n, nz), 3 n), float.
    markers : tuple of int
        ``(ix, iy, iz)``: slice positions [pixels]: ix, iy in 0..n-1, iz in 0..nz-1.
    n : int
        Width of a slice [pixels] (detector columns).
    nz : int
        Height of the vertical slices [pixels] (detector rows).
    value : float, optional
        Line value; the largest finite pixel of ``image`` when omitted (0 if none is finite).

    Raises
    ------
    BadParameter
        When a marker lies outside its slice.
    """
    _draw_lines(image, _marker_lines(markers, n, nz), value)


def _draw_lines(image: np.ndarray, lines: list[tuple], value: float | None = None) -> None:
    """Set the pixels of ``lines`` (from :func:`_marker_lines`) to ``value`` (default: the
    largest finite pixel)."""
    if value is None:
        value = _finite_max(image)
    for index in lines:
        image[index] = value


def _finite_max(image: np.ndarray) -> float:
    """Largest finite pixel (0 if none): one pass over a 50 MB image unless some are not finite."""
    top = float(image.max()) if image.size else 0.0
    if np.isfinite(top):
        return top
    finite = image[np.isfinite(image)]
    return float(finite.max()) if finite.size else 0.0


def _marker_lines(markers: tuple[int, int, int], n: int, nz: int) -> list[tuple]:
    """Index of each slice-crossing line in the (max(n, nz), 3 n) image."""
    ix, iy, iz = _check_markers(markers, n, nz)
    return [(slice(0, n), ix),                   # Z panel: the X slice plane
            (iy, slice(0, n)),                   # Z panel: the Y slice plane
            (iz, slice(n, 2 * n)),               # Y panel: the Z slice plane
            (slice(0, nz), n + ix),              # Y panel: the X slice plane
            (iz, slice(2 * n, 3 * n)),           # X panel: the Z slice plane
            (slice(0, nz), 2 * n + iy)]          # X panel: the Y slice plane


class ReconPublisher:
    """Publish ortho-slice images on one PVA channel of a :class:`PvaChannels`.

    The channel is created by the first :meth:`publish`. Each update carries ``uniqueId``
    one more than the last (starting at 1, wrapping as a signed 32-bit integer), the
    ``ColorMode`` attribute 0 and float32 pixels. Shape and dtype stay the same while the
    geometry (n, nz) does, so ImageJ's EPICS_NTNDA_Viewer keeps its window.

    Parameters
    ----------
    channels : PvaChannels
        Server that serves the channel.
    name : str
        Channel name, e.g. ``"2bmb:TomoStream:StreamRecon"``.
    draw_markers : bool
        Draw the slice-crossing lines when :meth:`publish` is given markers.
    """

    def __init__(self, channels: PvaChannels, name: str, draw_markers: bool = True):
        if not name:
            raise BadParameter("reconstruction PVA channel name is empty")
        self.channels = channels
        self.name = name
        self.draw_markers = draw_markers
        self.unique_id = 0
        self._lock = threading.Lock()

    def publish(self, image: np.ndarray, markers: tuple[int, int, int] | None = None,
                n: int | None = None, nz: int | None = None, timestamp: float | None = None,
                line_value: float | None = None) -> int:
        """Serve a new ortho-slice image.

        Parameters
        ----------
        image : numpy.ndarray
            (max(n, nz), 3 n) image, real values; published as float32. Unchanged when this
            returns; a float32 image holds the marker lines while it is being copied.
        markers : tuple of int, optional
            ``(ix, iy, iz)`` [pixels]; lines are drawn when given and :attr:`draw_markers`.
        n : int, optional
            Slice width [pixels]; ``image.shape[1] // 3`` when omitted.
        nz : int, optional
            Height of the vertical slices [pixels]; the image height when omitted (give it
            when nz < n, where the image height is n).
        timestamp : float, optional
            [s since the POSIX epoch]; now when omitted.
        line_value : float, optional
            Value of the marker lines; the largest finite pixel when omitted (a pass over the
            image: give it when known already).

        Returns
        -------
        int
            The uniqueId published.

        Raises
        ------
        BadFrame
            When the image is not 2-D, not real, or its shape is not (max(n, nz), 3 n).
        BadParameter
            When a marker lies outside its slice.
        """
        image = np.asarray(image)
        if image.ndim != 2 or not (np.issubdtype(image.dtype, np.floating)
                                   or np.issubdtype(image.dtype, np.integer)):
            raise BadFrame(f"reconstruction image {image.shape} {image.dtype} is not a 2-D real image")
        height, width = image.shape
        n = width // 3 if n is None else int(n)
        nz = height if nz is None else int(nz)
        if n < 1 or nz < 1 or (height, width) != (max(n, nz), 3 * n):
            raise BadFrame(f"reconstruction image shape {image.shape} is not (max(n, nz), 3n) "
                           f"= ({max(n, nz)}, {3 * n}) for n={n}, nz={nz}")
        lines = _marker_lines(markers, n, nz) if markers is not None and self.draw_markers else []
        # float32 pixels are published as they are: the lines are drawn into the caller's image
        # and its pixels put back once copied into the NTNDArray (a 2048^2 image is 50 MB)
        borrowed = image.dtype == np.float32 and image.flags.writeable
        out = image if borrowed else image.astype(np.float32)
        saved = [out[index].copy() for index in lines] if borrowed else []
        if lines:
            _draw_lines(out, lines, line_value)
        with self._lock:
            uid = self.unique_id + 1 if self.unique_id < INT32_MAX else INT32_MIN
            try:
                pv = to_ntnda(out, uid, timestamp)
            finally:
                if borrowed:
                    for index, pixels in zip(lines, saved, strict=True):
                        out[index] = pixels
            if self.name in self.channels:
                self.channels.update(self.name, pv)
            else:
                self.channels.add(self.name, pv)
            self.unique_id = uid
        return uid

    def close(self) -> None:
        """Stop serving the channel (if it was created)."""
        with self._lock:
            if self.name in self.channels:
                self.channels.remove(self.name)
