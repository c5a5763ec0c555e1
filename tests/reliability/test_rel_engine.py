"""Device out of memory or failing: the engine halves its batches, then moves to the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from failing_backends import broken_device_backend, small_memory_backend

from tomostream.recon import OrthoReconstructor

N, NZ, P = 48, 16, 60


@pytest.fixture(scope="module")
def frames():
    """60 noiseless transmission frames over 180 degrees (uint16) and their angles."""
    angles = np.arange(P) * (180.0 / P)
    rng = np.random.default_rng(0)
    data = (rng.uniform(2000, 4000, (P, NZ, N))).astype(np.uint16)
    return data, angles


def reference(frames) -> np.ndarray:
    rec = OrthoReconstructor(N, NZ, P, backend="numpy")
    rec.push(*frames)
    return rec.image()


def test_out_of_memory_halves_the_batch_and_the_image_is_unchanged(frames):
    frame_work = NZ * 128 * 4                     # one frame of padded float32 rows [bytes]
    be = small_memory_backend(limit=3 * frame_work)
    rec = OrthoReconstructor(N, NZ, P, backend=be, batch=32)
    rec.push(*frames)
    image = rec.image()
    assert rec.backend == "smallgpu"              # stays on its device, with smaller batches
    assert be.xp.refused >= 1
    assert [d.split(": ")[-1] for d in rec.degradations] == [
        "batches of 16 now", "batches of 8 now", "batches of 4 now", "batches of 2 now"]
    assert "MemoryError" in rec.backend_reason and "batches of 2 now" in rec.backend_reason
    np.testing.assert_allclose(image, reference(frames), rtol=1e-4, atol=1e-5 * np.abs(image).max())
    rec.push(frames[0][:5], frames[1][:5] + 0.5)  # later pushes just work, no new failure
    assert len(rec.degradations) == 4


def test_failing_device_moves_to_the_cpu_keeping_the_buffer(frames):
    data, angles = frames
    rec = OrthoReconstructor(N, NZ, P, backend=broken_device_backend(after_calls=3), batch=1)
    rec.push(data[:3], angles[:3])                # 3 frames, one at a time: fine
    assert rec.backend == "brokengpu" and rec.filled == 3
    rec.push(data[3:], angles[3:])                # the device fails at batch 1: the CPU
    assert rec.backend == "numpy"
    assert "DeviceError" in rec.backend_reason and "using NumPy on the CPU" in rec.backend_reason
    assert rec.degradations[-1].startswith("brokengpu on test device failed while adding frames")
    assert rec.filled == P                         # frames pushed before the failure kept
    np.testing.assert_allclose(rec.image(), reference(frames), rtol=1e-4,
                               atol=1e-5 * np.abs(reference(frames)).max())


def test_ring_removal_survives_the_move_to_the_cpu(frames):
    """The running sum of the buffered frames is counted again on the CPU from the frames
    copied over, and the slices are those of the whole buffer corrected there."""
    data, angles = frames
    rec = OrthoReconstructor(N, NZ, P, backend=broken_device_backend(after_calls=2), batch=1)
    rec.set_params(ring_removal="fw")
    rec.push(data[:10], angles[:10])              # the first frame incremental, then re-processed:
    rec.image()                                   # two calls
    assert rec.backend == "brokengpu"
    rec.push(data[10:], angles[10:])              # the device fails at the next frame
    assert rec.backend == "numpy"
    image = rec.image()
    assert rec.filled == P
    np.testing.assert_array_equal(rec.pipeline.stripes.total, data.sum(axis=0, dtype=np.float64))
    want = OrthoReconstructor(N, NZ, P, backend="numpy")
    want.push(data, angles)
    want.set_params(ring_removal="fw")
    np.testing.assert_allclose(image, want.image(), rtol=1e-4, atol=1e-5 * np.abs(image).max())


def test_failure_while_computing_the_slices_falls_back_too(frames):
    data, angles = frames
    rec = OrthoReconstructor(N, NZ, P, backend=broken_device_backend(after_calls=2), batch=30)
    rec.push(data, angles)                        # two batches, incremental: two calls
    assert rec.backend == "brokengpu"
    rec.set_params(center=N / 2 + 1)              # the next image rebuilds the sums
    image = rec.image()
    assert rec.backend == "numpy"
    assert "while computing the slices" in rec.degradations[-1]
    want = OrthoReconstructor(N, NZ, P, backend="numpy")
    want.set_params(center=N / 2 + 1)
    want.push(data, angles)
    np.testing.assert_allclose(image, want.image(), rtol=1e-4, atol=1e-5 * np.abs(image).max())


def test_cpu_out_of_memory_is_not_hidden(frames, monkeypatch):
    rec = OrthoReconstructor(N, NZ, P, backend="numpy", batch=1)

    def no_memory(*args):
        raise MemoryError("host out of memory")

    monkeypatch.setattr(rec.compute_backend.kernels, "preprocess", no_memory)
    with pytest.raises(MemoryError, match="host out of memory"):
        rec.push(*frames)


@pytest.mark.gpu
def test_real_gpu_out_of_memory_is_survived(frames):
    """On a GPU: the device filled by another allocation, the next push still succeeds."""
    import cupy as cp

    data, angles = frames
    rec = OrthoReconstructor(N, NZ, P, backend="cupy", batch=8)
    rec.push(data[:10], angles[:10])
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    hog, size = [], 1 << 32
    while size >= 512:                             # take every byte the device has left
        try:
            hog.append(cp.empty(size, dtype=cp.uint8))
        except cp.cuda.memory.OutOfMemoryError:
            size //= 2
    try:
        rec.push(data[10:], angles[10:])
        image = rec.image()
    finally:
        del hog
        pool.free_all_blocks()
    assert any("OutOfMemoryError" in d for d in rec.degradations), rec.degradations
    # smaller batches where the freed staging buffers make room, else the CPU
    assert "OutOfMemoryError" in rec.backend_reason
    assert rec.backend == "numpy" or "batches of" in rec.degradations[-1]
    assert rec.filled == P
    want = reference(frames)
    np.testing.assert_allclose(image, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
