"""ImageSubscriber and LatestValue against real PV Access servers (pvapy and p4p)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pvaccess
import pytest
from helpers import pixels
from hypothesis import given
from hypothesis import strategies as st

from tomostream.errors import BadParameter
from tomostream.pva.fields import field_pv, read_field, read_theta, theta_pv
from tomostream.pva.ntnda import INT32_MAX, INT32_MIN, to_ntnda
from tomostream.pva.server import PvaChannels
from tomostream.pva.subscriber import ImageSubscriber, LatestValue
from tomostream.unique_ids import WRAP_WINDOW, missing_ids


def _frame(uid: int, dtype=np.uint16):
    return to_ntnda(pixels(uid, dtype), uid)


# -- uniqueId bookkeeping ----------------------------------------------------------------------
@pytest.mark.parametrize("previous, current, expected", [
    (5, 6, 0), (5, 9, 3),
    (65535, 0, 0), (65534, 1, 2),                       # 16-bit detector counter wraps
    (INT32_MAX, INT32_MIN, 0), (INT32_MAX - 1, INT32_MIN + 1, 2),  # int32 overflow
    (INT32_MAX, 0, 0), (INT32_MAX, 4, 4),               # 2**31 wrap to zero
    (5, 5, None), (1000, 1, None), (40000, 1, None),    # repeats and new acquisitions
])
def test_missing_ids(previous, current, expected):
    assert missing_ids(previous, current) == expected


@given(start=st.integers(INT32_MIN, INT32_MAX), skipped=st.integers(0, WRAP_WINDOW - 1))
def test_missing_ids_counts_skips_modulo_32_bits(start, skipped):
    current = (start + skipped + 1 - INT32_MIN) % (1 << 32) + INT32_MIN
    assert missing_ids(start, current) == skipped


# -- ImageSubscriber --------------------------------------------------------------------------
def _serve_and_subscribe(channels, name, first_id, **kwargs) -> ImageSubscriber:
    """Serve ``first_id`` and subscribe; returns once that first frame came (monitor live)."""
    channels.add(name, _frame(first_id))
    sub = ImageSubscriber(name, **kwargs).start()
    assert sub.get(5.0).unique_id == first_id
    return sub


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_frames_arrive_in_order(dtype, channels, unique_prefix, wait):
    name = unique_prefix + "Image"
    channels.add(name, _frame(0, dtype))
    with ImageSubscriber(name, queue_size=16) as sub:
        assert sub.wait_connected(5.0)
        first = sub.get(5.0)
        assert first.unique_id == 0
        for uid in range(1, 6):
            channels.update(name, _frame(uid, dtype))
        frames = [sub.get(5.0) for _ in range(5)]
    assert [f.unique_id for f in frames] == [1, 2, 3, 4, 5]
    assert all(f.array.dtype == dtype and f.array.shape == (8, 12) for f in frames)
    np.testing.assert_array_equal(frames[-1].array, pixels(5, dtype))
    assert sub.counters == dict(received=6, dropped=0, lost=0, bad=0, reconnects=0, resubscribes=0,
                                repeated=0, restarts=0, overflow=0)
    assert not sub.connected


def test_frames_from_an_independent_p4p_server(p4p_server, unique_prefix, wait):
    from p4p.nt import NTNDArray

    def value(uid):
        v = NTNDArray().wrap(np.full((6, 10), uid, np.uint16))
        v["uniqueId"] = uid
        return v

    name = unique_prefix + "P4p"
    pv = p4p_server(name, value(1))
    with ImageSubscriber(name) as sub:
        assert sub.get(5.0).unique_id == 1
        pv.post(value(2))
        pv.post(value(4))
        wait(lambda: sub.queued == 2, what="two frames")
    frames = sub.drain()
    assert [f.unique_id for f in frames] == [2, 4]
    assert frames[1].array.shape == (6, 10) and frames[1].array[0, 0] == 4
    assert sub.counters["lost"] == 1


def test_updates_queued_while_the_consumer_was_held_all_arrive_in_order(channels, unique_prefix, wait):
    """The consumer thread takes a backlog in a row (under one hold of the GIL): none is lost,
    skipped or reordered."""
    name = unique_prefix + "Image"
    sub = _serve_and_subscribe(channels, name, 0, queue_size=64, monitor_queue=100)
    with sub:
        with sub._ready:               # the consumer blocks on its next frame; pvapy queues on
            for uid in range(1, 41):
                channels.update(name, _frame(uid))
            wait(lambda: sub._pvq.getCounters()["nReceived"] >= 41, timeout=30.0,
                 what="the backlog queued")      # frame 0, and 1-40 behind the held consumer
            time.sleep(0.2)
        wait(lambda: sub.last_unique_id == 40, what="the backlog taken")
        frames = sub.drain()
    assert [f.unique_id for f in frames] == list(range(1, 41))
    np.testing.assert_array_equal(frames[-1].array, pixels(40))
    # each frame says when it was decoded: after its timestamp, the held ones 0.2 s after
    # (frame 1 may have been decoded before the consumer blocked)
    assert all(0 < f.timestamp <= f.received for f in frames)
    assert all(f.received - f.timestamp >= 0.2 for f in frames[1:])
    assert sub.counters["lost"] == sub.counters["dropped"] == 0
    assert sub._pvq.getCounters()["nRejected"] == 0


def test_updates_turned_away_by_a_full_client_queue_are_counted_as_lost_here(
        channels, unique_prefix, wait):
    name = unique_prefix + "Image"
    sub = _serve_and_subscribe(channels, name, 0, queue_size=64, monitor_queue=10)
    with sub:
        with sub._ready:               # the consumer is held: the 10-update queue fills up
            for uid in range(1, 41):
                channels.update(name, _frame(uid))
            wait(lambda: sub._pvq.getCounters()["nRejected"] > 0, what="a full client queue")
            time.sleep(0.2)
        # the consumer must have emptied the client queue, or frame 41 is turned away too
        wait(lambda: len(sub._pvq) == 0, timeout=30.0, what="the client queue emptied")
        channels.update(name, _frame(41))
        wait(lambda: sub.last_unique_id == 41, what="the last frame")
    c = sub.counters
    assert 0 < c["overflow"] <= c["lost"]
    assert c["received"] + c["lost"] == 42


class _DeafChannel:
    """A pvapy channel whose connection callback never comes, as when it connected before the
    callback was set."""

    real = pvaccess.Channel

    def __init__(self, name: str):
        self._channel = self.real(name)

    def setConnectionCallback(self, callback) -> None:
        pass

    def __getattr__(self, name: str):
        return getattr(self._channel, name)


def test_a_value_shows_the_connection_whose_callback_was_missed(channels, unique_prefix, monkeypatch):
    from tomostream.pva import monitor

    name = unique_prefix + "Image"
    channels.add(name, _frame(0))
    status: list[str] = []
    monkeypatch.setattr(monitor.pva, "Channel", _DeafChannel)
    with ImageSubscriber(name, on_status=status.append) as sub:
        assert sub.wait_connected(5.0)
        assert sub.get(5.0).unique_id == 0
        assert sub.connected
    assert status[0] == f"{name} connected"


def test_slow_consumer_drops_oldest_and_memory_stays_bounded(channels, unique_prefix, wait):
    name = unique_prefix + "Image"
    sub = _serve_and_subscribe(channels, name, 0, queue_size=4)
    last = 60
    with sub:
        for uid in range(1, last + 1):
            channels.update(name, _frame(uid))
        wait(lambda: sub.last_unique_id == last, what="last frame")
        assert sub.counters["received"] + sub.counters["lost"] == last + 1
        assert sub.queued == 4
        frames = sub.drain()
    ids = [f.unique_id for f in frames]
    assert ids[-1] == last and ids == sorted(ids)
    assert sub.counters["dropped"] == sub.counters["received"] - 1 - 4  # one taken by get()
    assert sub.get(0.01) is None


@pytest.mark.parametrize("ids, lost, restarts", [
    ([65533, 65534, 65535, 0, 1, 3], 1, 0),
    ([INT32_MAX - 1, INT32_MAX, INT32_MIN, INT32_MIN + 3], 2, 0),
    ([10, 11, 15, 16, 2, 3], 3, 1),          # ids restart at 2: a new acquisition, not a loss
])
def test_gaps_and_wraps_over_the_wire(ids, lost, restarts, channels, unique_prefix, wait):
    name = unique_prefix + "Image"
    with _serve_and_subscribe(channels, name, ids[0]) as sub:
        for uid in ids[1:]:
            channels.update(name, _frame(uid))
        wait(lambda: sub.queued == len(ids) - 1, what="all frames")
    assert [f.unique_id for f in sub.drain()] == ids[1:]
    assert sub.counters["lost"] == lost
    assert sub.counters["restarts"] == restarts


def test_bad_frames_are_counted_and_reported(channels, unique_prefix, wait):
    name = unique_prefix + "Image"
    status: list[str] = []
    with _serve_and_subscribe(channels, name, 1, on_status=status.append) as sub:
        bad = _frame(2)
        bad["dimension"] = bad["dimension"][:1]
        channels.update(name, bad)
        channels.update(name, _frame(3))
        wait(lambda: sub.queued == 1, what="good frame")
        assert sub.counters["bad"] == 1
    assert [f.unique_id for f in sub.drain()] == [3]
    assert any("bad update" in s and "1 dimensions" in s for s in status)


def test_server_restart_is_survived(unique_prefix, wait):
    name = unique_prefix + "Image"
    status: list[str] = []
    first = PvaChannels()
    first.add(name, _frame(1))
    with ImageSubscriber(name, on_status=status.append) as sub:
        assert sub.get(5.0).unique_id == 1
        first.stop()
        wait(lambda: not sub.connected, what="disconnect")
        with PvaChannels() as second:
            second.add(name, _frame(7))
            frame = sub.get(10.0)
            assert frame is not None and frame.unique_id == 7
            assert sub.connected
            second.update(name, _frame(8))
            assert sub.get(5.0).unique_id == 8
    assert sub.counters["reconnects"] == 1
    assert sub.counters["lost"] == 5  # ids 2..6 never came: counted across the reconnection
    wait(lambda: any("reconnected" in s for s in status), what="status")
    assert f"{name} connected" in status and f"{name} disconnected" in status


def test_subscriber_started_before_the_server(unique_prefix, wait):
    name = unique_prefix + "Image"
    with ImageSubscriber(name) as sub:
        assert not sub.wait_connected(0.05)
        with PvaChannels() as channels:
            channels.add(name, _frame(3))
            frame = sub.get(10.0)
    assert frame.unique_id == 3 and sub.counters["reconnects"] == 0


def test_a_search_left_unanswered_is_renewed(channels, unique_prefix, monkeypatch, wait):
    """The first search is never answered (as seen for 20-50 s on loopback at times): the
    subscriber searches anew, connects and receives."""
    from tomostream.pva import monitor

    name = unique_prefix + "Image"
    channels.add(name, _frame(4))
    made: list[str] = []
    real = pvaccess.Channel

    def channel(wanted):  # the first search looks for a name nobody serves
        made.append(wanted)
        return real(wanted if len(made) > 1 else unique_prefix + "Nobody")

    monkeypatch.setattr(monitor.pva, "Channel", channel)
    monkeypatch.setattr(monitor, "_RENEW_S", 0.5)
    with ImageSubscriber(name) as sub:
        frame = sub.get(20.0)
        assert frame is not None and frame.unique_id == 4
        assert sub.connected and sub.renewals == 1
    assert made == [name, name]


def test_bad_parameters():
    with pytest.raises(BadParameter, match="queue_size=0"):
        ImageSubscriber("x", queue_size=0)
    with pytest.raises(BadParameter, match="empty"):
        ImageSubscriber("")
    with pytest.raises(BadParameter, match="monitor_queue=0"):
        LatestValue("x", read_theta, monitor_queue=0)


# -- LatestValue ------------------------------------------------------------------------------
def test_latest_dark_flat_and_theta(channels, unique_prefix, wait):
    changes: list[int] = []
    names = {k: unique_prefix + k for k in ("StreamDarkFields", "StreamFlatFields", "StreamTheta")}
    channels.add(names["StreamDarkFields"], field_pv(np.zeros((3, 4))))
    channels.add(names["StreamFlatFields"], field_pv(np.ones((3, 4))))
    channels.add(names["StreamTheta"], theta_pv([0.0, 1.0]))
    dark = LatestValue(names["StreamDarkFields"], read_field,
                       on_change=lambda v: changes.append(int(v[0, 0])))
    flat = LatestValue(names["StreamFlatFields"], read_field)
    theta = LatestValue(names["StreamTheta"], read_theta)
    with dark, flat, theta:
        wait(lambda: dark.version == flat.version == theta.version == 1, what="first values")
        np.testing.assert_array_equal(flat.value, np.ones((3, 4)))
        np.testing.assert_array_equal(theta.value, [0.0, 1.0])
        channels.update(names["StreamDarkFields"], field_pv(np.full((3, 4), 7.0)))
        channels.update(names["StreamTheta"], theta_pv(np.arange(0.0, 180.0, 0.25)))
        wait(lambda: dark.version == 2 and theta.version == 2, what="new values")
        assert flat.version == 1
        np.testing.assert_array_equal(dark.value, np.full((3, 4), 7.0, np.float32))
        assert theta.value.shape == (720,) and theta.value[-1] == 179.75
    assert changes == [0, 7]


def test_latest_value_keeps_previous_on_bad_update(channels, unique_prefix, wait):
    name = unique_prefix + "StreamDarkFields"
    status: list[str] = []
    channels.add(name, field_pv(np.full((2, 2), 5.0)))
    seen = threading.Event()
    with LatestValue(name, read_field, on_status=status.append,
                     on_change=lambda v: seen.set()) as dark:
        assert seen.wait(5.0)
        bad = field_pv(np.zeros((2, 2)))
        bad["sizex"] = 3
        channels.update(name, bad)
        wait(lambda: dark.counters["bad"] == 1, what="bad value counted")
        assert dark.version == 1
        np.testing.assert_array_equal(dark.value, np.full((2, 2), 5.0))
    assert any("sizex * sizey" in s for s in status)
