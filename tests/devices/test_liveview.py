"""The live view draws only new images and marks the slice positions."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from tomostream.errors import BadParameter  # noqa: E402
from tomostream.liveview import LiveView  # noqa: E402


def test_update_draws_each_new_image_once_and_saves(tmp_path):
    view = LiveView(ortho=(5, 6, 3), figure=Figure())
    image = np.random.default_rng(0).random((16, 48)).astype(np.float32)
    view.show(image)
    assert view.redraws == 1
    assert not view.update()  # nothing new: no redraw
    assert view.axes[0].get_title() == "Z slice (row 3)"
    np.testing.assert_array_equal(view._images[1].get_array(), image[:, 16:32])
    assert len(view._lines) == 4
    view.show(image * 2)
    assert view.redraws == 2
    assert view.save(tmp_path / "v.png").stat().st_size > 1000


def test_max_rate_must_be_positive():
    with pytest.raises(BadParameter, match="max_rate=0"):
        LiveView(max_rate=0, figure=Figure())
