"""ScatterSubscriber: one stream spread over several channels, received into one queue."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from helpers import pixels

from tomostream.errors import BadParameter
from tomostream.pva import receive_process as rp
from tomostream.pva.ntnda import to_ntnda
from tomostream.pva.scatter import MAX_PLUGINS, ScatterSubscriber, plugin_prefixes
from tomostream.pva.subscriber import ImageSubscriber

START = 30.0   # a receiving process starts Python, NumPy and pvapy


@pytest.mark.parametrize("prefix, count, expected", [
    ("2bmSP1:Pva1:", 1, ["2bmSP1:Pva1:"]),
    ("2bmSP1:Pva1:", 3, ["2bmSP1:Pva1:", "2bmSP1:Pva2:", "2bmSP1:Pva3:"]),
    ("13SIM1:Pva9:", 2, ["13SIM1:Pva9:", "13SIM1:Pva10:"]),
    ("Det", 1, ["Det"]),
])
def test_plugin_prefixes_count_up_from_the_first(prefix, count, expected):
    assert plugin_prefixes(prefix, count) == expected


def test_bad_plugin_counts_and_channel_lists_are_refused():
    with pytest.raises(BadParameter, match="no number to count 2 plugins up from"):
        plugin_prefixes("Det:Pva:", 2)
    for count in (0, MAX_PLUGINS + 1):
        with pytest.raises(BadParameter, match=f"must be 1..{MAX_PLUGINS}"):
            plugin_prefixes("Det:Pva1:", count)
    with pytest.raises(BadParameter, match="distinct"):
        ScatterSubscriber(["A:Image", "A:Image"])
    with pytest.raises(BadParameter, match="distinct"):
        ScatterSubscriber([])


@pytest.fixture
def scatter(channels, unique_prefix):
    """Two served image channels; ``post(uid)`` puts odd ids on the first, even on the second
    (as NDPluginScatter does). Their names as ``.names``; each starts with its first frame
    (ids 1 and 2)."""
    names = [f"{unique_prefix}Pva{k}:Image" for k in (1, 2)]
    for k, name in enumerate(names):
        channels.add(name, to_ntnda(pixels(k + 1), k + 1))

    def post(uid: int) -> None:
        channels.update(names[(uid - 1) % 2], to_ntnda(pixels(uid), uid))

    post.names = names
    return post


def _take(sub, last: int, wait) -> dict:
    frames = {}

    def until_last():
        for frame in sub.drain():
            assert frame.unique_id not in frames
            frames[frame.unique_id] = frame
        return last in frames

    wait(until_last, START, f"frame {last}")
    return frames


@pytest.mark.parametrize("process", [True, False], ids=["process", "in-process"])
def test_every_channel_feeds_one_queue_and_ids_are_counted_over_the_stream(scatter, wait, process):
    sub = ScatterSubscriber(scatter.names, queue_size=64, process=process).start()
    try:
        assert sub.wait_connected(START) and sub.connected
        wait(lambda: sub.queued == 2, START, "the channels' first frames")
        sent = [uid for uid in range(3, 41) if uid not in (20, 21, 22)]   # 3 never sent
        for uid in sent:
            scatter(uid)
        frames = _take(sub, 40, wait)
        assert sorted(frames) == [1, 2, *sent]
        for uid, frame in frames.items():
            np.testing.assert_array_equal(frame.array, pixels(uid))
        wait(lambda: sub.counters["received"] == 37, 30.0, "the counters of both channels")
        assert sub.counters["lost"] + sub.ledger.missing == 3   # lost once reorder_s is over
    finally:
        sub.stop()
    counters = sub.counters
    assert (counters["lost"], counters["dropped"], counters["repeated"], counters["restarts"]) == (3, 0, 0, 0)
    assert sub.last_unique_id == 40 and sub.channel == ", ".join(scatter.names)


def test_a_channel_whose_process_fails_is_received_here_and_the_other_goes_on(
        scatter, wait, monkeypatch):
    monkeypatch.setattr(rp, "MAX_RESTARTS", 0)
    statuses: list[str] = []
    sub = ScatterSubscriber(scatter.names, queue_size=64, on_status=statuses.append).start()
    try:
        wait(lambda: sub.queued == 2, START, "the channels' first frames")
        sub.drain()
        second = sub.receivers[1]
        os.kill(second.pid, signal.SIGKILL)
        wait(lambda: isinstance(sub.receivers[1], ImageSubscriber), 30.0, "the fall-back")
        assert isinstance(sub.receivers[0], rp.ProcessImageSubscriber)
        assert any(f"receiving {scatter.names[1]} in the server process: the receiving process "
                   "ended 1 times" in s for s in statuses)
        assert sub.receivers[1].wait_connected(10.0)
        # the new monitor is sent the channel's current frame again: a repeat, not queued
        wait(lambda: sub.counters["repeated"] == 1, 30.0, "the re-sent current frame")
        assert not sub.queued
        for uid in range(3, 11):
            scatter(uid)
        frames = _take(sub, 10, wait)
        assert sorted(frames) == list(range(3, 11))
        assert sub.counters["received"] >= 10 and sub.counters["repeated"] == 1
    finally:
        sub.stop()
    assert sub.counters["lost"] == 0
