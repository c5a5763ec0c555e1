"""Malformed NTNDArrays published into the image channel of a running server.

Built as raw pvapy objects (wrong number of dimensions, empty or mismatched value arrays,
unsupported element types, absurd or negative sizes, compressed codecs) and served on the
detector's own channel: the server counts each in FramesBad, keeps running and still uses the
good frames that follow.
"""

from __future__ import annotations

import time

import numpy as np
import pvaccess as pva
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_helpers import N, start_recon

from tomostream.pva.ntnda import MAX_PIXELS, MAX_SIDE, to_ntnda

MEMBERS = {"byteValue": np.int8, "ubyteValue": np.uint8, "shortValue": np.int16,
           "ushortValue": np.uint16, "intValue": np.int32, "uintValue": np.uint32,
           "longValue": np.int64, "ulongValue": np.uint64, "floatValue": np.float32,
           "doubleValue": np.float64}


def ntnda(dims: list[int], member: str | None, count: int, codec: str = "", uid: int = 7) -> pva.NtNdArray:
    """An NTNDArray with ``dims`` sizes and ``count`` values of union ``member`` (None: unset)."""
    nt = pva.NtNdArray()
    nt["dimension"] = [pva.PvDimension(int(d), 0, int(d), 1, False) for d in dims]
    if member == "booleanValue":
        nt["value"] = {member: [True] * count}
    elif member is not None:
        nt["value"] = {member: np.ones(count, dtype=MEMBERS[member])}
    nt["codec"] = {"name": codec, "parameters": ()}
    nt["uniqueId"] = uid
    stamp = pva.PvTimeStamp(int(time.time()), 0, 0)
    nt["timeStamp"] = stamp
    nt["dataTimeStamp"] = stamp
    return nt


sides = st.integers(1, 32)
numeric = st.sampled_from(sorted(MEMBERS))


@st.composite
def malformed(draw) -> tuple[str, pva.NtNdArray]:
    kind = draw(st.sampled_from(["ndim", "empty", "mismatch", "type", "absurd", "codec"]))
    w, h = draw(sides), draw(sides)
    if kind == "ndim":
        dims = draw(st.sampled_from([[], [w], [w, h, 3], [w, h, 2, 2]]))
        return kind, ntnda(dims, draw(numeric), int(np.prod(dims)) if dims else 1)
    if kind == "empty":
        member = draw(st.one_of(st.none(), numeric))
        return kind, ntnda([w, h], member, 0)
    if kind == "mismatch":
        count = draw(st.integers(1, 2 * w * h).filter(lambda c: c != w * h))
        return kind, ntnda([w, h], draw(numeric), count)
    if kind == "type":
        return kind, ntnda([w, h], "booleanValue", w * h)
    if kind == "absurd":
        big = draw(st.sampled_from([0, -1, -w, MAX_SIDE + 1, 2**31 - 1]))
        dims = draw(st.sampled_from([[big, h], [w, big], [big, big]]))
        assert not (0 < min(dims) and max(dims) <= MAX_SIDE and dims[0] * dims[1] <= MAX_PIXELS)
        return kind, ntnda(dims, draw(numeric), w * h)
    return kind, ntnda([w, h], draw(numeric), w * h, codec=draw(st.sampled_from(["blosc", "jpeg", "lz4"])))


@pytest.fixture
def running(beamline, make_server, ca):
    """The server reconstructing from the (idle) beamline."""
    server = make_server()
    start_recon(ca, server)
    return beamline, server


def bad_count(server) -> int:
    return server.counters["FramesBad"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed())
def test_malformed_frames_are_counted_bad_and_the_server_goes_on(running, ca, wait_until, case):
    beamline, server = running
    kind, pv = case
    before = bad_count(server)
    beamline.channels.update(beamline.image_channel, pv)
    wait_until(lambda: bad_count(server) == before + 1, 5.0,
               lambda: f"{kind} frame counted bad: {server.counters}")
    assert server.running and server.ready


def test_bad_frames_then_good_ones(running, ca, sim_ca, status, wait_until):
    beamline, server = running
    for k, pv in enumerate([ntnda([N, N, 2], "ushortValue", 2 * N * N), ntnda([N, N], None, 0),
                            ntnda([N, N], "ushortValue", N * N - 1), ntnda([N, N], "booleanValue", N * N),
                            ntnda([2**31 - 1, 2**31 - 1], "ushortValue", 4)]):
        beamline.channels.update(beamline.image_channel, pv)
        wait_until(lambda k=k: bad_count(server) == k + 1, 5.0, f"bad frame {k} counted")
    wait_until(lambda: ca.get("FramesBad") == 5, 5.0, "FramesBad published")
    assert "NTNDArray has 3 dimensions" in status.wait_for("bad update")  # said, at most 1/s
    beamline.channels.update(beamline.image_channel, to_ntnda(np.zeros((N, N), np.uint16), 3))
    used = ca.get("FramesUsed")
    sim_ca.put("StartScan", 1)                        # good frames are used as before
    wait_until(lambda: ca.get("FramesUsed") >= used + 118, 20.0, "the scan's frames used")
    assert ca.get("BufferSize") == "60/60"
    assert ca.get("FramesBad") == 5 and server.running


def test_a_channel_of_another_structure_is_refused(running, ca, wait_until):
    """The image channel replaced by a scalar (a misconfigured name): counted bad, then back."""
    beamline, server = running
    name = beamline.image_channel
    beamline.channels.remove(name)
    beamline.channels.add(name, pva.PvObject({"value": pva.INT}, {"value": 3}))
    wait_until(lambda: bad_count(server) >= 1, 10.0, lambda: f"a bad update: {server.counters}")
    assert server.running
    beamline.channels.remove(name)
    beamline.channels.add(name, to_ntnda(np.zeros((N, N), np.uint16), 1))
    wait_until(lambda: server.ready, 10.0, "the detector followed again")


def test_frames_of_another_type_or_size_mid_stream_never_stop_it(running, ca, sim_ca, status, wait_until):
    """Between good uint16 frames of a scan: a lone float32 frame, a NaN frame, a frame of
    another size are refused with a reason; a detector that switched to float32 is followed;
    uniqueIds far ahead or negative pass without harm. Streaming never stops."""
    from tomostream.server.gate import NEW_SIZE_RUN

    beamline, server = running
    sim_ca.put("StartScan", 1)                        # completes at the end of the scan
    wait_until(lambda: ca.get("BufferSize") == "60/60", 20.0, "a full buffer")
    first = int(sim_ca.get("FirstProjid"))
    counts = server.counters

    def post(array, uid):
        """Serve one frame and wait until the server has taken it in (whatever its verdict)."""
        received = server.counters["FramesReceived"]
        beamline.channels.update(beamline.image_channel, to_ntnda(array, uid))
        wait_until(lambda: server.counters["FramesReceived"] == received + 1, 10.0,
                   lambda: f"frame {uid} received: {server.counters}")

    def settled():
        c = server.counters
        return c["FramesReceived"] - c["FramesBad"] == (c["FramesUsed"] + c["FramesDropped"]
                                                        + c["NotProjection"] + c["OutsideTheta"])

    def verdict(array, uid):
        """(bad, used) added by one frame."""
        before = server.counters
        post(array, uid)
        wait_until(settled, 10.0, lambda: f"frame {uid} judged: {server.counters}")
        after = server.counters
        return after["FramesBad"] - before["FramesBad"], after["FramesUsed"] - before["FramesUsed"]

    # the scan's own frames first: all sent and judged (a loaded machine may still be at it)
    wait_until(lambda: sim_ca.get("StartScan") == 0 and settled(), 60.0,
               lambda: f"the scan over and its frames judged: {server.counters}")
    good = np.full((N, N), 1000, np.uint16)
    as_float = good.astype(np.float32)
    assert verdict(as_float, first + 1) == (1, 0)     # one float32 frame in a uint16 stream
    status.wait_for(f"refused: a float32 {N}x{N} frame in a stream of uint16 {N}x{N} frames")
    assert verdict(good, first + 2) == (0, 1)
    assert verdict(np.full((N, N), np.nan, np.float32), first + 3) == (1, 0)
    assert verdict(good[: N // 2], first + 4) == (1, 0)            # another size, alone
    assert verdict(good, first + 5) == (0, 1)
    # a detector that now sends float32: its frames are followed once NEW_SIZE_RUN came in a row
    for k in range(NEW_SIZE_RUN - 1):
        assert verdict(as_float, first + 6 + k) == (1, 0)
    assert verdict(as_float, first + 6 + NEW_SIZE_RUN) == (0, 1)
    status.wait_for("the detector now sends float32 frames (was uint16)")
    assert verdict(as_float, first + 7 + NEW_SIZE_RUN) == (0, 1)
    for uid in (2**31 - 2, -5):                      # far ahead of the scan, negative
        post(as_float, uid)
    assert verdict(as_float, first + 8 + NEW_SIZE_RUN) == (0, 1)
    assert server.running and ca.text("ServerRunning") == "Running"
    assert ca.text("StartRecon") == "Acquire" and server.ready
    assert counts["FramesUsed"] < server.counters["FramesUsed"]
