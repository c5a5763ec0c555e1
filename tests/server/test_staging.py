"""FrameStager: frames stacked by several threads equal np.stack."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream.server.staging import FrameStager


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("shape", [(1031, 1024), (8, 8)])   # over and under staging.PARALLEL_BYTES
def test_stack_equals_numpy(threads, shape):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 65535, shape, dtype=np.uint16) for _ in range(3)]
    out = np.zeros((5, *shape), np.uint16)
    stager = FrameStager(threads)
    try:
        got = stager.stack(frames, out)
    finally:
        stager.close()
    assert got.shape == (3, *shape) and np.shares_memory(got, out)
    np.testing.assert_array_equal(got, np.stack(frames))
    assert not out[3:].any()


def test_a_frame_of_another_size_is_refused():
    stager = FrameStager(2)
    try:
        with pytest.raises(ValueError, match="do not fit"):
            stager.stack([np.zeros((1100, 1024), np.uint16), np.zeros((1100, 1000), np.uint16)],
                         np.zeros((2, 1100, 1024), np.uint16))
    finally:
        stager.close()
