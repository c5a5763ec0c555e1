"""Frames received by a child process and handed over through shared memory."""

from __future__ import annotations

import errno
import mmap
import os
import signal
import socket

import numpy as np
import pytest
from helpers import pixels, wait_until

from tomostream.errors import BadParameter
from tomostream.pva import receive_process as rp
from tomostream.pva.ntnda import to_ntnda
from tomostream.pva.receive_process import ProcessImageSubscriber, _RingWriter
from tomostream.pva.ring import MIN_SLOTS, Ring, ring_slots
from tomostream.pva.shm import SHM_DIR
from tomostream.pva.wire import Fatal, FrameIn, Inbox, State, Wire

START = 30.0   # a child starts Python, NumPy and pvapy: seconds on a busy machine


def _rings(pid: int) -> list[str]:
    """The ring files of the receiving child ``pid`` (other processes may have their own)."""
    return [f for f in os.listdir(SHM_DIR) if f.startswith(f"tomostream-rx-{pid}-")]


@pytest.fixture
def image(channels, unique_prefix):
    """``post(uid, dtype=..., shape=...)`` on a served image channel; its name as ``.name``."""
    name = unique_prefix + "Image"
    channels.add(name, to_ntnda(pixels(0), 0))

    def post(uid: int, dtype=np.uint16, shape=(8, 12)) -> None:
        channels.update(name, to_ntnda(pixels(uid, dtype, shape), uid))

    post.name = name
    return post


def _subscribe(image, **kw) -> ProcessImageSubscriber:
    """A started subscriber that has received the channel's current frame (uid 0)."""
    sub = ProcessImageSubscriber(image.name, **kw).start()
    frame = sub.get(START)
    assert frame is not None and frame.unique_id == 0, sub.failed
    return sub


# -- pieces ------------------------------------------------------------------------------------
def test_inbox_takes_messages_out_of_any_split_of_the_stream():
    a, b = socket.socketpair()
    messages = [FrameIn(0, k, k, 1.5, 2.5, {"received": k}, True) for k in range(50)]
    wire = Wire(a)
    for m in messages:
        wire.send(m)
    data = b.recv(1 << 20)
    inbox, got = Inbox(), []
    for k in range(0, len(data), 7):        # pieces that cut headers and bodies
        got += inbox.feed(data[k:k + 7])
    assert got == messages and all(type(m) is FrameIn for m in got)
    a.close()
    b.close()


def test_a_wire_says_when_the_other_end_has_gone():
    a, b = socket.socketpair()
    mine = Wire(a)
    assert mine.receive(0.0) == []                      # nothing yet: no wait
    Wire(b).send(State({}, False, None, "hello"))
    assert mine.receive(10.0) == [State({}, False, None, "hello")]
    b.close()
    with pytest.raises(EOFError):
        mine.receive(10.0)
    a.close()


def test_ring_slots_follow_the_budget():
    frame = 2048 * 2048 * 2
    assert ring_slots(frame, 384, 1 << 30) == 128
    assert ring_slots(512 * 512 * 2, 384, 1 << 30) == 384
    assert ring_slots(frame, 384, 1) == MIN_SLOTS


def test_a_slot_is_free_again_only_when_every_view_of_its_frame_is_gone():
    ring = Ring.create(0, (4, 6), np.uint16, 2)
    try:
        other = Ring.attach(0, ring.path, (4, 6), np.uint16, 2)
        first, second = ring.take(), ring.take()
        assert (first, second) == (0, 1) and ring.take() is None
        ring.write(first, np.full((4, 6), 7, np.uint16))
        frame = other.frame(first)                     # the parent's read-only view
        assert frame.flags.writeable is False and int(frame.sum()) == 7 * 24
        row = frame[2]
        del frame
        assert ring.take() is None                      # a row of it is still held
        del row
        assert ring.take() == first                     # released through the shared state
    finally:
        ring.close()
    assert not os.path.exists(ring.path or "/nonexistent")


def test_a_ring_takes_memory_only_as_its_slots_are_used():
    ring = Ring.create(0, (512, 1024), np.uint16, 64)       # 64 MiB of slots
    try:
        used = lambda: os.stat(ring.path).st_blocks * 512  # noqa: E731
        assert used() < 1 << 20
        slot = ring.take()
        ring.reserve(slot)
        ring.write(slot, np.ones((512, 1024), np.uint16))
        assert 1 << 20 <= used() < 2 << 20
    finally:
        ring.close()


def test_bad_arguments_are_refused():
    with pytest.raises(BadParameter):
        ProcessImageSubscriber("")
    with pytest.raises(BadParameter):
        ProcessImageSubscriber("X:Image", queue_size=0)


# -- the child ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_frames_arrive_in_order_through_shared_memory(dtype, image, wait):
    sub = _subscribe(image, queue_size=16)
    try:
        assert sub.connected and sub.pid not in (None, os.getpid())
        child = sub.pid
        for uid in range(1, 6):
            image(uid, dtype)
        wait(lambda: sub.queued >= 5, 30.0, "five frames")
        frames = sub.drain()
        assert [f.unique_id for f in frames] == [1, 2, 3, 4, 5]
        for f in frames:
            assert f.array.dtype == dtype and f.array.shape == (8, 12)
            assert not f.array.flags.writeable
            assert f.timestamp > 0 and f.received >= f.timestamp
        np.testing.assert_array_equal(frames[-1].array, pixels(5, dtype))
        assert sub.counters["received"] == 6 and sub.counters["lost"] == 0
        assert sub.last_unique_id == 5
    finally:
        sub.stop()
    assert not sub.connected
    np.testing.assert_array_equal(frames[0].array, pixels(1, dtype))  # still readable
    assert _rings(child) == []                          # no file left behind


def test_a_caller_holding_every_slot_makes_new_frames_count_as_dropped(image, wait):
    sub = _subscribe(image, queue_size=64, ring_bytes=1)   # MIN_SLOTS slots
    try:
        held = []
        for uid in range(1, 20):
            image(uid)
            if uid < MIN_SLOTS:
                wait(lambda: sub.queued, 10.0, f"frame {uid}")
                held += sub.drain()
        # frame 0 was released; 1..7 are held: one slot is left, for frame 8
        wait(lambda: sub.counters["dropped"] == 11, 30.0, "eleven frames dropped")
        assert [f.unique_id for f in sub.drain()] == [8]
        assert sub.counters["lost"] == 0                   # dropped here, not lost upstream
        held.clear()                                       # the slots come back
        image(20)
        frame = wait(lambda: sub.get(0.1), 30.0, "frame 20")
        assert frame.unique_id == 20
        np.testing.assert_array_equal(frame.array, pixels(20))
    finally:
        sub.stop()


def test_the_oldest_frames_are_dropped_when_the_queue_is_full(image, wait):
    sub = _subscribe(image, queue_size=3)
    try:
        for uid in range(1, 9):
            image(uid)
        wait(lambda: sub.last_unique_id == 8, 30.0, "frame 8")
        assert [f.unique_id for f in sub.drain()] == [6, 7, 8]
        assert sub.counters["dropped"] == 5
    finally:
        sub.stop()


def test_a_new_frame_size_gets_a_new_ring_and_old_frames_stay_valid(image, wait):
    sub = _subscribe(image, queue_size=8)
    try:
        image(1)
        old = wait(lambda: sub.get(0.1), 30.0, "frame 1")
        image(2, shape=(16, 24))
        new = wait(lambda: sub.get(0.1), 30.0, "frame 2")
        assert new.array.shape == (16, 24)
        np.testing.assert_array_equal(new.array, pixels(2, shape=(16, 24)))
        np.testing.assert_array_equal(old.array, pixels(1))
    finally:
        sub.stop()


def test_a_killed_child_is_replaced_and_ids_are_counted_across_the_gap(image, wait):
    statuses: list[str] = []
    sub = _subscribe(image, queue_size=16, on_status=statuses.append)
    try:
        image(1)
        wait(lambda: sub.last_unique_id == 1, 30.0, "frame 1")
        first = sub.pid
        os.kill(first, signal.SIGKILL)
        wait(lambda: sub.pid not in (None, first) and sub.connected, START, "another child")
        image(5)                                           # 2..4 never came
        wait(lambda: sub.last_unique_id == 5, 30.0, "frame 5")
        assert sub.process_restarts == 1 and sub.failed is None
        assert sub.counters["lost"] == 3
        assert sub.counters["received"] >= 3               # 0, 1 and 5 (0 may come again)
        assert any("receiving process ended (exit code -9): starting another" in s
                   for s in statuses)
        assert _rings(first) == []
    finally:
        sub.stop()


def test_a_child_that_dies_too_often_is_given_up(image, wait, monkeypatch):
    monkeypatch.setattr(rp, "MAX_RESTARTS", 0)
    statuses: list[str] = []
    sub = _subscribe(image, on_status=statuses.append)
    try:
        os.kill(sub.pid, signal.SIGKILL)
        wait(lambda: sub.failed, 30.0, "the subscriber failed")
        assert "ended 1 times within 60 s" in sub.failed
        assert sub.pid is None and not sub.connected
        assert any(sub.failed in s for s in statuses)
    finally:
        sub.stop()


def test_a_child_that_cannot_start_says_so(image, wait, monkeypatch):
    monkeypatch.setattr(rp.sys, "executable", "/nonexistent/python")
    sub = ProcessImageSubscriber(image.name).start()
    try:
        wait(lambda: sub.failed, 30.0, "the subscriber failed")
        assert "cannot start the receiving process" in sub.failed
    finally:
        sub.stop()


class _Writer:
    """A :class:`_RingWriter` run here against ``image``, and the messages it sends."""

    def __init__(self, image, slots: int = 16):
        self.mine, self.theirs = socket.socketpair()
        self.theirs.settimeout(START)
        self.inbox, self.messages = Inbox(), []
        self.writer = _RingWriter(image.name, Wire(self.mine), monitor_queue=4, slots=slots,
                                  ring_bytes=1 << 20, last_id=None)

    def wait(self, predicate, what: str) -> list:
        """Read messages until ``predicate(messages)`` is true; those that satisfy it."""
        while not predicate(self.messages):
            try:
                self.messages += self.inbox.feed(self.theirs.recv(1 << 16))
            except TimeoutError:
                pytest.fail(f"no {what} within {START:g} s: {self.messages}")
        return [m for m in self.messages if predicate([m])]

    def close(self) -> None:
        self.writer.stop()
        self.writer.close()
        self.mine.close()
        self.theirs.close()


@pytest.fixture
def writer(image):
    w = _Writer(image)
    yield w
    w.close()


def test_no_room_for_a_ring_is_reported_to_the_parent(writer, monkeypatch):
    """The receiving side's own logic, run here: when /dev/shm cannot hold even the ring's
    state bytes, it sends why and gives up (the parent then receives in its own process)."""
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    writer.writer.start()
    assert writer.writer.gave_up.wait(10.0)
    fatal, = writer.wait(lambda ms: any(type(m) is Fatal for m in ms), "fatal message")
    assert fatal.reason.startswith("no room for a 4 kB ring of 16 frames 12x8 in /dev/shm")
    assert writer.writer.counters["received"] == 0


def test_a_ring_goes_on_with_the_slots_it_found_room_for(writer, image, monkeypatch):
    """Slots get their space when first used; those without room are given up, said once,
    and the ring goes on with the others."""
    real = os.posix_fallocate
    page = mmap.PAGESIZE

    def room_for_two(fd, offset, length):
        if offset >= page + 2 * page:           # state bytes, then two 4 kB slots
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", room_for_two)
    writer.writer.start()
    frames = lambda ms: [m for m in ms if type(m) is FrameIn]  # noqa: E731
    fewer = lambda m: type(m) is State and m.text and "fewer frames" in m.text  # noqa: E731
    writer.wait(lambda ms: len(frames(ms)) >= 1, "the first frame")       # uid 0, slot 0
    image(1)
    writer.wait(lambda ms: len(frames(ms)) >= 2, "the second frame")      # slot 1
    image(2)                                                               # no room: dropped
    # the thread that reserves slots ahead of use may find the lack of room (and report it)
    # before the frame that needs slot 2 arrives: wait for both
    writer.wait(lambda ms: any(fewer(m) for m in ms), "the report of too little room")
    wait_until(lambda: writer.writer.counters["dropped"] == 1, START,
               lambda: f"frame 2 dropped: {writer.writer.counters}")
    assert [m.unique_id for m in frames(writer.messages)] == [0, 1]
    assert not writer.writer.gave_up.is_set()
    writer.writer._ring.states[0] = 0        # the parent releases the first frame
    image(3)
    writer.wait(lambda ms: len(frames(ms)) >= 3, "a frame in the released slot")
    last = frames(writer.messages)[-1]
    assert (last.slot, last.unique_id) == (0, 3)
    reported = [m for m in writer.messages if fewer(m)]
    assert len(reported) == 1 and "no room for a 4 kB ring of 16 frames 12x8" in reported[0].text
