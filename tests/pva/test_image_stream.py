"""open_image_stream: where the frames of one or several channels are received, and the change
to this process when a receiving child fails."""

from __future__ import annotations

import os
import signal

import pytest
from helpers import pixels

from tomostream.errors import BadParameter
from tomostream.pva import receive_process as rp
from tomostream.pva import shm
from tomostream.pva.ntnda import to_ntnda
from tomostream.pva.receiving import open_image_stream
from tomostream.pva.scatter import ScatterSubscriber
from tomostream.pva.stream import FallbackStream, ImageStream
from tomostream.pva.subscriber import ImageSubscriber

START = 30.0   # a receiving process starts Python, NumPy and pvapy


@pytest.fixture
def image(channels, unique_prefix):
    """``post(uid)`` on a served image channel (first frame: uid 0); its name as ``.name``."""
    name = unique_prefix + "Image"
    channels.add(name, to_ntnda(pixels(0), 0))

    def post(uid: int) -> None:
        channels.update(name, to_ntnda(pixels(uid), uid))

    post.name = name
    return post


def test_every_frame_source_is_an_image_stream(image):
    sources = [ImageSubscriber(image.name), rp.ProcessImageSubscriber(image.name),
               FallbackStream(image.name), ScatterSubscriber([image.name, image.name + "2"])]
    assert all(isinstance(source, ImageStream) for source in sources)


def test_bad_channel_lists_are_refused():
    for channels in ([], [""], ["A:Image", "A:Image"]):
        with pytest.raises(BadParameter, match="distinct"):
            open_image_stream(channels, process=False)


def test_several_channels_make_one_scattered_stream(channels, unique_prefix):
    names = [f"{unique_prefix}Pva{k}:Image" for k in (1, 2)]
    for k, name in enumerate(names):
        channels.add(name, to_ntnda(pixels(k + 1), k + 1))
    stream = open_image_stream(names, process=False, queue_size=8, last_unique_id=0)
    try:
        assert isinstance(stream, ScatterSubscriber) and stream.channel == ", ".join(names)
        assert all(type(r) is ImageSubscriber for r in stream.receivers)
        assert stream.wait_connected(START)
    finally:
        stream.stop()


def test_no_shared_memory_means_receiving_here_and_saying_why(image, wait, monkeypatch):
    monkeypatch.setattr(shm, "available", lambda: False)
    statuses: list[str] = []
    stream = open_image_stream([image.name], process=True, on_status=statuses.append)
    try:
        assert type(stream.receiver) is ImageSubscriber and stream.pid is None
        assert any(s.startswith(f"receiving {image.name} in the server process: no ")
                   for s in statuses)
        frame = stream.get(START)
        assert frame is not None and frame.unique_id == 0
    finally:
        stream.stop()


def test_a_failed_child_is_replaced_here_keeping_the_queue_and_the_counts(image, wait, monkeypatch):
    monkeypatch.setattr(rp, "MAX_RESTARTS", 0)
    statuses: list[str] = []
    stream = open_image_stream([image.name], process=True, queue_size=16,
                               on_status=statuses.append)
    try:
        child = stream.receiver
        assert isinstance(child, rp.ProcessImageSubscriber)
        wait(lambda: stream.queued == 1, START, "the current frame from the child")
        for uid in (1, 2):
            image(uid)
        wait(lambda: stream.queued == 3, START, "frames 0..2 from the child")
        os.kill(stream.pid, signal.SIGKILL)
        wait(lambda: type(stream.receiver) is ImageSubscriber, START, "the change to this process")
        assert any(s.startswith(f"receiving {image.name} in the server process: the receiving "
                                "process ended 1 times") for s in statuses)
        assert stream.receiver.wait_connected(START)
        # the new monitor is sent the channel's current frame again: a repeat, not queued
        wait(lambda: stream.counters["repeated"] == 1, START, "the re-sent current frame")
        image(3)
        wait(lambda: stream.queued == 4, START, "frame 3")
        assert [f.unique_id for f in stream.drain()] == [0, 1, 2, 3]   # nothing lost on the way
        counters = stream.counters
        assert (counters["received"], counters["lost"], counters["dropped"]) == (4, 0, 0)
        assert stream.last_unique_id == 3
    finally:
        stream.stop()
    assert not stream.connected
