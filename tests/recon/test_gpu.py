"""The CuPy backend: same numbers as NumPy, 64-bit indexing, memory checks (needs a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recon.conftest import FLAT, NZ, N, transmission
from tomostream.errors import BadParameter
from tomostream.recon import OrthoReconstructor

pytestmark = pytest.mark.gpu


def pair(**params):
    recs = [OrthoReconstructor(width=N, height=NZ, buffer_size=60, backend=b) for b in ("numpy", "cupy")]
    for r in recs:
        r.set_flat(np.full((NZ, N), FLAT))
        r.set_params(**{"ortho": (36, 30, 13), **params})
    return recs


@pytest.mark.parametrize("params", [dict(), dict(filter="ramp", center=N / 2 + 2.5), dict(rot=(10, -5, 30)),
                                    dict(dezinger=2, dezinger_threshold=0.2),
                                    dict(alpha=1e-2, energy=25.0, distance=50.0),
                                    dict(zoom=2.0, ortho=(20, 44, 8)), dict(zoom=3.5, ortho=(20, 44, 8)),
                                    dict(zoom=3.5, ortho=(20, 44, 8), rot=(10, -5, 30)),
                                    dict(ring_removal="fw"),
                                    dict(ring_removal="fw", dezinger=2, alpha=1e-2, energy=25.0,
                                         distance=50.0)])
def test_cupy_equals_numpy(phantom, params):
    cpu, gpu = pair(**params)
    assert gpu.backend == "cupy"
    rng = np.random.default_rng(3)
    angles = rng.uniform(0, 540, 150)
    frames = transmission(phantom, angles)
    frames[3, 5, 5] = np.nan
    for chunk in np.array_split(np.arange(150), 5):
        for r in (cpu, gpu):
            r.push(frames[chunk], angles[chunk])
    a, b = cpu.image(), gpu.image()
    np.testing.assert_allclose(b, a, atol=1e-4 * np.abs(a).max())
    assert gpu.stats == cpu.stats


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_ring_removal_frame_by_frame_equals_numpy(phantom, dtype):
    """Miscalibrated columns (a gain the flat field misses), frames pushed one at a time with
    an image every few frames: the running sum, the stripe estimate and the re-processings
    while the buffer fills give NumPy's slices on the GPU at every step."""
    from tomostream.sim.response import column_gain

    cpu, gpu = pair(ring_removal="fw")
    angles = np.arange(150) * 2.4                           # two turns of the 60-slot buffer
    frames = transmission(phantom, angles) * column_gain(N, 0.2, 0)
    if dtype == np.uint16:
        frames = np.round(frames).astype(np.uint16)
    for k, angle in enumerate(angles):
        for r in (cpu, gpu):
            r.push(frames[k], [angle])
        if k % 10 == 9:
            a, b = cpu.image(), gpu.image()
            np.testing.assert_allclose(b, a, atol=1e-4 * np.abs(a).max(), err_msg=f"after frame {k}")
    assert gpu.stats == cpu.stats and cpu.stats["reprocessed"] > 0
    np.testing.assert_allclose(gpu.pipeline.stripes.total.get(), cpu.pipeline.stripes.total, rtol=1e-12)


def test_incremental_equals_rebuild_on_gpu(phantom):
    _, gpu = pair()
    gpu.rebuild_every = 0
    angles = np.random.default_rng(0).uniform(-400, 400, 600)
    frames = transmission(phantom, angles)
    gpu.slices()
    for f, a in zip(frames, angles, strict=True):
        gpu.push(f, [a])
    inc = gpu.image()
    gpu._stale_sums = True
    np.testing.assert_allclose(inc, gpu.image(), atol=1e-4 * np.abs(inc).max())


def test_pinned_frames_and_uint16(phantom):
    import cupyx

    cpu, gpu = pair()
    angles = np.arange(60) * 3.0
    frames = np.round(transmission(phantom, angles)).astype(np.uint16)
    pinned = cupyx.empty_pinned(frames.shape, dtype=np.uint16)
    pinned[...] = frames
    gpu.push(pinned, angles)
    pinned[...] = 0                       # push returned: the copy is done, the buffer is ours again
    cpu.push(frames, angles)
    np.testing.assert_allclose(gpu.image(), cpu.image(), atol=1e-4 * np.abs(cpu.image()).max())


def test_indices_beyond_32_bits():
    n, nz, p = 2048, 1024, 1100                      # P * nz * n = 2.3e9 > 2**31
    big = OrthoReconstructor(width=n, height=nz, buffer_size=p, backend="cupy")
    small = OrthoReconstructor(width=n, height=nz, buffer_size=8, backend="cupy")
    rng = np.random.default_rng(0)
    angles = np.array([179.9, 135.0, 90.0, 45.0])    # 179.9: the last slot of the big buffer
    frames = rng.uniform(500, 1000, (4, nz, n)).astype(np.float32)
    for r in (big, small):
        r.set_flat(np.full((nz, n), 1000.0))
        r.set_params(ortho=(100, 1900, nz - 3))
        r.push(frames, angles)
    assert big.filled == small.filled == 4
    a, b = big.image(), small.image()
    assert np.isfinite(a).all() and np.abs(a).max() > 0
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())


def test_buffer_too_large_for_the_card_is_refused():
    with pytest.raises(BadParameter, match="GiB"):
        OrthoReconstructor(width=4096, height=4096, buffer_size=20000, backend="cupy")


def test_device_memory_stops_growing_whatever_the_push_sizes(phantom):
    """Pushes of every size from 1 to 3 batches: once each chunk shape has been met, the
    device pool (buffers and FFT plan work areas) holds no more memory."""
    import cupy

    _, gpu = pair()
    pool = cupy.get_default_memory_pool()
    angles = np.arange(300) * 1.7
    frames = transmission(phantom, angles)
    sizes = np.arange(1, 3 * gpu._batch + 1)

    def push_all(order):
        start = 0
        for k in order:
            idx = np.arange(start, start + k) % angles.size
            gpu.push(frames[idx], angles[idx])
            start += k
        gpu.image()
        gpu.synchronize()

    push_all(sizes)
    held = pool.total_bytes()
    push_all(np.random.default_rng(1).permutation(sizes))
    assert pool.total_bytes() == held


@pytest.mark.parametrize("n, nz", [(24, 40), (40, 24)])
def test_image_assembled_on_the_device_equals_numpy_with_its_peak(n, nz):
    rng = np.random.default_rng(5)
    frames = rng.uniform(100.0, 1000.0, (30, nz, n)).astype(np.float32)
    angles = np.linspace(0.0, 180.0, 30, endpoint=False)
    cpu, gpu = (OrthoReconstructor(width=n, height=nz, buffer_size=30, backend=b)
                for b in ("numpy", "cupy"))
    out = np.full((max(n, nz), 3 * n), np.nan, np.float32)   # padding must be written too
    for r in (cpu, gpu):
        r.set_flat(np.full((nz, n), 1000.0, np.float32))
        r.push(frames, angles)
    a, b = cpu.image(), gpu.image(out=out)
    assert b is out
    np.testing.assert_allclose(b, a, atol=1e-4 * np.abs(a).max())
    assert (b[n:, :n] == 0).all() and (b[nz:, n:] == 0).all()
    assert gpu.peak == pytest.approx(float(b.max())) and cpu.peak is None


@pytest.mark.parametrize("nz", [NZ, 300])            # 300 rows: the estimate reads 256 of them
def test_center_estimate_cupy_equals_numpy(nz):
    from tomostream.recon.phantom import default_phantom

    center = N / 2 + 2.5
    recs = [OrthoReconstructor(width=N, height=nz, buffer_size=60, backend=b) for b in ("numpy", "cupy")]
    angles = 200.0 + np.arange(90) * 3.0                 # the last 180 degrees fill every slot
    clean = transmission(default_phantom(N, nz), angles, n=N, nz=nz, center=center)
    frames = np.round(clean * np.random.default_rng(5).normal(1.0, 0.01, clean.shape)).astype(np.uint16)
    for r in recs:
        r.set_flat(np.full((nz, N), FLAT))
        r.push(frames[:50], angles[:50])
    assert all(np.isnan(r.estimate_center()) for r in recs)     # 150 degrees: none yet
    for r in recs:
        r.push(frames[50:], angles[50:])
    cpu, gpu = (r.estimate_center() for r in recs)
    assert recs[1].backend == "cupy"
    assert abs(cpu - center) <= 0.25
    assert gpu == pytest.approx(cpu, abs=1e-3)
