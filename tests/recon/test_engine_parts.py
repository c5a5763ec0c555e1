"""The parts the reconstructor is built from: backend classes, input checks and frame tables,
slice sums, memory sizing, and the read-only view of the engine's state that tools use."""

from __future__ import annotations

import numpy as np
import pytest

from tests.recon.conftest import FLAT, NZ, N, transmission
from tomostream.errors import BadParameter
from tomostream.recon import OrthoReconstructor
from tomostream.recon.backend import Backend, HostUploader, NumpyBackend, place_slices, select_backend
from tomostream.recon.inputs import last_per_slot, pack_frames, slots_of, unpack_frames
from tomostream.recon.memory import MAX_BATCH, batch_size, check_room
from tomostream.recon.slices import SliceSums


def test_the_numpy_backend_is_a_backend_and_the_interface_is_abstract():
    be = select_backend("numpy")
    assert isinstance(be, NumpyBackend) and isinstance(be, Backend)
    assert be.counter().dtype == np.int64 and be.counter().tolist() == [0]
    assert isinstance(be.uploader(4, (NZ, N), be.stream()), HostUploader)
    with pytest.raises(TypeError):
        Backend("x", "", np, None, None, "CPU")          # the interface alone is no backend


def test_host_uploads_are_the_arrays_themselves():
    a, b = np.arange(6), np.ones(3)
    arrays, token = HostUploader().upload(a, b)
    assert arrays[0] is a and arrays[1] is b and token is None


@pytest.mark.parametrize("n, nz", [(5, 3), (3, 5)])
def test_host_assembly_places_the_slices_and_zeroes_the_padding(n, nz):
    be = select_backend("numpy")
    rng = np.random.default_rng(0)
    sums = (rng.normal(size=(n, n)), rng.normal(size=(nz, n)), rng.normal(size=(nz, n)))
    out = np.full((max(n, nz), 3 * n), np.nan, np.float32)
    peak, canvas = be.assemble(sums, 2.0, out)
    assert peak is None and canvas is None
    np.testing.assert_allclose(out[:n, :n], 2 * sums[0], rtol=1e-6)
    np.testing.assert_allclose(out[:nz, n:2 * n], 2 * sums[1], rtol=1e-6)
    np.testing.assert_allclose(out[:nz, 2 * n:], 2 * sums[2], rtol=1e-6)
    assert (out[n:, :n] == 0).all() and (out[nz:, n:] == 0).all()
    again = np.zeros_like(out)
    place_slices(np, sums, 2.0, again)
    np.testing.assert_array_equal(again, out)


def test_slots_and_the_last_frame_of_each_slot():
    slots = slots_of(np.array([0.0, 179.99, 180.0, 359.0, -1.0, 45.0]), 4)
    assert slots.tolist() == [0, 3, 0, 3, 3, 1]
    assert last_per_slot(slots, 4).tolist() == [2, 4, 5]


def test_a_frame_table_unpacks_to_what_was_packed():
    slots, angles = np.array([3, 0, 7]), np.array([10.0, 90.0, 135.0])
    idx, cos_t, sin_t, w = unpack_frames(pack_frames(slots, angles, -1.0), np)
    assert idx.dtype == np.int32 and idx.tolist() == [3, 0, 7]
    np.testing.assert_allclose(cos_t, np.cos(np.deg2rad(angles)), rtol=1e-6)
    np.testing.assert_allclose(sin_t, np.sin(np.deg2rad(angles)), atol=1e-7)
    assert w.dtype == np.float32 and w.tolist() == [-1.0, -1.0, -1.0]


def test_slice_sums_of_a_frame_added_then_taken_away_are_zero():
    be = select_backend("numpy")
    params = OrthoReconstructor(N, NZ, 4, backend="numpy").params.replace(N, NZ, rot=(10.0, 0.0, 0.0))
    filt = be.kernels.frame_buffer(4, NZ, N)
    filt[1] = np.random.default_rng(1).normal(size=(NZ, N))
    sums = SliceSums(be, N, NZ)
    sums.add(filt, pack_frames(np.array([1]), np.array([30.0]), 1.0), params)
    assert all(np.abs(s).max() > 0 for s in sums.arrays)
    sums.add(filt, pack_frames(np.array([1]), np.array([30.0]), -1.0), params)
    assert all(np.abs(s).max() < 1e-9 for s in sums.arrays)
    sums.clear()
    assert all((s == 0).all() for s in sums.arrays)


def test_batch_and_room():
    assert batch_size(64, 24, None) == MAX_BATCH
    assert batch_size(8192, 8192, 1 << 30) >= 1
    check_room(2048, 2048, 1500, 8, None, "CPU")                    # the host: not checked
    with pytest.raises(BadParameter, match=r"buffer_size=1500 of 2048x2048 .* GiB on test device"):
        check_room(2048, 2048, 1500, 8, 4 << 30, "test device")


def test_the_read_only_view_of_the_state(phantom):
    rec = OrthoReconstructor(width=N, height=NZ, buffer_size=30, backend="numpy")
    rec.set_flat(np.full((NZ, N), FLAT))
    assert rec.raw_frames is None and rec.compute_backend.name == rec.backend == "numpy"
    angles = np.arange(10) * 6.0
    frames = transmission(phantom, angles)
    rec.push(frames, angles)
    occupied = rec.occupied
    assert occupied.tolist() == [True] * 10 + [False] * 20
    occupied[:] = False                                     # a copy: the engine is unchanged
    assert rec.filled == 10
    np.testing.assert_array_equal(rec.raw_frames[:10], frames)
    np.testing.assert_array_equal(rec.pipeline.flat, np.full((NZ, N), FLAT, np.float32))
    assert not rec.up_to_date                               # the flat set: a re-processing pending
    rec.image()
    assert rec.up_to_date
    rec.set_params(center=N / 2 + 1)
    assert not rec.up_to_date                               # a rebuild is pending
    rec.image()
    assert rec.up_to_date
    absorption = rec.pipeline.absorption(rec.raw_frames[:1], rec.params)
    np.testing.assert_allclose(absorption[0, :, :N], -np.log(frames[0] / FLAT), atol=1e-5)
