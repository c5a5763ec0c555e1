"""A live view of the three slices for IPython and Jupyter (matplotlib).

The view follows a :class:`~tomostream.devices.PvaImageSignal` (``tomostream.recon``): each
new image only replaces a "latest" reference (from the PVA thread, never touching matplotlib);
a matplotlib timer redraws at most ``max_rate`` times per second from the GUI thread. With a
non-interactive backend (``inline``, ``Agg``) call :meth:`LiveView.update` to draw the latest
image, and :meth:`LiveView.save` to write it to a file.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .devices.pva_image import split_slices

TITLES = ("Z slice (row {z})", "Y slice (column {y})", "X slice (column {x})")


class LiveView:
    """Z, Y and X slices side by side, with the positions of the other slices marked.

    Parameters
    ----------
    signal : PvaImageSignal, optional
        Source of images (``tomostream.recon``); None: feed images with :meth:`show`.
    ortho : (int, int, int), optional
        Slice positions X, Y, Z [pixels] to mark; None: the middle of the volume.
    max_rate : float
        Most redraws per second [Hz].
    figure : matplotlib.figure.Figure, optional
        Figure to draw in; a new one (from pyplot) otherwise.
    """

    def __init__(self, signal=None, *, ortho: tuple[int, int, int] | None = None, max_rate: float = 5.0,
                 figure=None):
        if not max_rate > 0:
            from .errors import BadParameter

            raise BadParameter(f"max_rate={max_rate} Hz must be > 0")
        self.signal = signal
        self.ortho = ortho
        self.max_rate = float(max_rate)
        self._latest: np.ndarray | None = None
        self._drawn: np.ndarray | None = None
        self._lock = threading.Lock()
        if figure is None:
            import matplotlib.pyplot as plt

            figure = plt.figure(figsize=(10, 3.6))
        self.figure = figure
        self.axes = figure.subplots(1, 3)
        self._images = None
        self._lines: list = []
        self.redraws = 0
        self._token = None
        self._timer = None
        if signal is not None:
            signal.start()
            self._token = signal.subscribe(self._on_image, run=False)
            self._timer = figure.canvas.new_timer(interval=int(1000 / self.max_rate))
            self._timer.add_callback(self.update)
            self._timer.start()

    def _on_image(self, value=None, **kwargs) -> None:
        with self._lock:
            self._latest = value

    def show(self, image: np.ndarray) -> None:
        """Make ``image`` (rows, 3n) the latest and draw it now."""
        self._on_image(value=np.asarray(image))
        self.update()

    def update(self) -> bool:
        """Draw the latest image if it is new; return whether something was drawn."""
        with self._lock:
            image = self._latest
        if image is None or image is self._drawn:
            return False
        self._draw(image)
        self._drawn = image
        self.redraws += 1
        self.figure.canvas.draw_idle()
        return True

    def _draw(self, image: np.ndarray) -> None:
        z, y, x = split_slices(image)
        n = z.shape[1]
        nz = image.shape[0] if image.shape[0] < n else n
        ix, iy, iz = self.ortho if self.ortho is not None else (n // 2, n // 2, nz // 2)
        slices = (z, y, x)
        low, high = np.percentile(image, (1, 99)) if image.size else (0.0, 1.0)
        if self._images is None:
            self._images = [ax.imshow(s, cmap="gray", vmin=low, vmax=high)
                            for ax, s in zip(self.axes, slices, strict=True)]
            for ax in self.axes:
                ax.set_xticks([])
                ax.set_yticks([])
        else:
            for im, s in zip(self._images, slices, strict=True):
                im.set_data(s)
                im.set_clim(low, high)
        for line in self._lines:
            line.remove()
        # Z slice: X and Y slice columns; Y and X slices: the Z slice row
        z_ax, y_ax, x_ax = self.axes
        self._lines = [z_ax.axvline(ix, color="r", lw=0.6), z_ax.axhline(iy, color="g", lw=0.6),
                       y_ax.axhline(iz, color="b", lw=0.6), x_ax.axhline(iz, color="b", lw=0.6)]
        for ax, title in zip(self.axes, TITLES, strict=True):
            ax.set_title(title.format(x=ix, y=iy, z=iz), fontsize=9)

    def save(self, path: str | Path) -> Path:
        """Draw the latest image and write the figure to ``path`` (PNG, PDF...)."""
        self.update()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.figure.savefig(path, dpi=100, bbox_inches="tight")
        return path

    def close(self) -> None:
        """Stop following the signal and stop the timer."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._token is not None and self.signal is not None:
            self.signal.unsubscribe(self._token)
            self._token = None
