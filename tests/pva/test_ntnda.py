"""NTNDArray encoding and decoding, checked locally and through p4p."""

from __future__ import annotations

import numpy as np
import pvaccess as pva
import pytest

from tomostream.errors import BadFrame
from tomostream.pva.ntnda import Frame, from_ntnda, restamp, to_ntnda

DTYPES = [np.uint8, np.uint16, np.float32]


def _image(dtype, height=24, width=40) -> np.ndarray:
    rng = np.random.default_rng(1)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, (height, width), endpoint=True).astype(dtype)
    return rng.standard_normal((height, width)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_keeps_pixels_id_and_time(dtype):
    image = _image(dtype)
    frame = from_ntnda(to_ntnda(image, 1234, timestamp=1_700_000_000.25))
    assert isinstance(frame, Frame)
    assert frame.array.dtype == dtype and frame.array.shape == (24, 40)
    np.testing.assert_array_equal(frame.array, image)
    assert frame.unique_id == 1234
    assert frame.timestamp == pytest.approx(1_700_000_000.25, abs=1e-6)
    assert not frame.array.flags.writeable


def test_restamp_gives_new_id_and_time_to_the_same_pixels():
    image = _image(np.uint16)
    nt = to_ntnda(image, 7, timestamp=1_700_000_000.0)
    assert restamp(nt, 8, timestamp=1_700_000_001.5) is nt
    frame = from_ntnda(nt)
    assert frame.unique_id == 8 and frame.timestamp == pytest.approx(1_700_000_001.5, abs=1e-6)
    assert nt["dataTimeStamp"]["secondsPastEpoch"] == 1_700_000_001
    np.testing.assert_array_equal(frame.array, image)
    with pytest.raises(BadFrame, match="uniqueId=-2147483649"):
        restamp(nt, -2**31 - 1)


def test_layout_is_areadetector_width_first():
    nt = to_ntnda(_image(np.uint16, height=3, width=5), 1)
    dims = nt["dimension"]
    assert [d["size"] for d in dims] == [5, 3]
    assert nt["codec"]["name"] == ""
    attrs = {a["name"]: a["value"][0]["value"] for a in nt["attribute"]}
    assert attrs == {"ColorMode": 0}
    assert nt["uncompressedSize"] == 30


def test_extra_attributes_and_non_contiguous_input():
    image = _image(np.float32, 20, 30)[:, ::2]
    nt = to_ntnda(image, -5, attributes={"Center": 7.5, "Note": "x", "ColorMode": 0})
    attrs = {a["name"]: a["value"][0]["value"] for a in nt["attribute"]}
    assert attrs == {"ColorMode": 0, "Center": 7.5, "Note": "x"}
    frame = from_ntnda(nt)
    np.testing.assert_array_equal(frame.array, image)
    assert frame.unique_id == -5


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4), np.int32), "dtype"),
    (np.zeros((2, 4, 4), np.uint16), "2-D"),
    (np.zeros((0, 4), np.uint16), "size"),
])
def test_to_ntnda_rejects_bad_images(bad, match):
    with pytest.raises(BadFrame, match=match):
        to_ntnda(bad, 1)


def test_to_ntnda_rejects_ids_beyond_32_bits():
    with pytest.raises(BadFrame, match="uniqueId=2147483648"):
        to_ntnda(np.zeros((2, 2), np.uint8), 2**31)


@pytest.mark.parametrize("member, dtype, expect", [
    ("byteValue", np.int8, np.float32),
    ("shortValue", np.int16, np.float32),
    ("uintValue", np.uint32, np.float32),
    ("intValue", np.int32, np.float32),
    ("doubleValue", np.float64, np.float32),
])
def test_other_areadetector_types_become_float32(member, dtype, expect):
    values = np.arange(-6, 6).astype(dtype) if np.issubdtype(dtype, np.signedinteger) \
        else np.arange(12).astype(dtype)
    nt = _raw(member, values, [4, 3])
    frame = from_ntnda(nt)
    assert frame.array.dtype == expect and frame.array.shape == (3, 4)
    np.testing.assert_array_equal(frame.array, values.reshape(3, 4).astype(expect))


def _raw(member, values, sizes, codec="") -> pva.NtNdArray:
    nt = pva.NtNdArray()
    if member is not None:
        nt["value"] = {member: values}
    nt["dimension"] = [pva.PvDimension(s, 0, s, 1, False) for s in sizes]
    nt["codec"] = {"name": codec, "parameters": ()}
    nt["uniqueId"] = 9
    return nt


@pytest.mark.parametrize("nt, match", [
    (_raw(None, None, [4, 3]), "empty"),
    (_raw("ushortValue", np.zeros(11, np.uint16), [4, 3]), "11 elements"),
    (_raw("ushortValue", np.zeros(12, np.uint16), [12]), "1 dimensions"),
    (_raw("ushortValue", np.zeros(12, np.uint16), [2, 2, 3]), "3 dimensions"),
    (_raw("ushortValue", np.zeros(12, np.uint16), [4, 3], codec="lz4"), "lz4"),
    (_raw("ushortValue", np.zeros(12, np.uint16), [1 << 20, 1 << 20]), "size"),
    (_raw("ushortValue", np.zeros(12, np.uint16), [-4, -3]), "size"),
    (_raw("booleanValue", np.zeros(12, bool), [4, 3]), "booleanValue"),
    (pva.PvObject({"value": [pva.FLOAT]}, {"value": [1.0, 2.0]}), "not a union"),
    (pva.PvObject({"x": pva.INT}, {"x": 1}), "no 'value'"),
])
def test_malformed_ntndarrays_raise_badframe(nt, match):
    with pytest.raises(BadFrame, match=match):
        from_ntnda(nt)


@pytest.mark.parametrize("dtype", DTYPES)
def test_p4p_reads_what_we_serve(dtype, channels, p4p_ctx, unique_prefix):
    name = unique_prefix + "Image"
    image = _image(dtype, 16, 48)
    channels.add(name, to_ntnda(image, 77))
    got = p4p_ctx.get(name, timeout=5.0)
    assert got.dtype == dtype and got.shape == (16, 48)
    np.testing.assert_array_equal(np.asarray(got), image)
    assert got.raw.uniqueId == 77
    assert got.attrib == {"ColorMode": 0}
    assert got.raw.codec.name == ""
    assert [d.size for d in got.raw.dimension] == [48, 16]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.int16, np.float64])
def test_pvapy_decodes_what_p4p_serves(dtype, p4p_server, unique_prefix):
    from p4p.nt import NTNDArray

    name = unique_prefix + "P4pImage"
    image = (np.arange(6 * 10) % 200).astype(dtype).reshape(6, 10)
    value = NTNDArray().wrap(image)
    value["uniqueId"] = 31
    p4p_server(name, value)
    frame = from_ntnda(pva.Channel(name).get("field()"))
    assert frame.unique_id == 31 and frame.array.shape == (6, 10)
    np.testing.assert_array_equal(frame.array, image.astype(frame.array.dtype))
