"""A TomoStream IOC served in this process, with a listener recording what it hands on."""

from __future__ import annotations

import queue

import pytest

from tomostream.ioc import IocThread
from tomostream.ioc.tomostream_ioc import TomoStreamIOC


class Recorder:
    """Listener that keeps every (suffix, value) the IOC hands on, in order."""

    def __init__(self):
        self.events: queue.SimpleQueue = queue.SimpleQueue()

    def __call__(self, suffix, value):
        self.events.put((suffix, value))

    def wait_for(self, suffix, timeout=30.0):
        """Return the value of the next event for ``suffix`` (skipping others)."""
        while True:
            got, value = self.events.get(timeout=timeout)
            if got == suffix:
                return value


@pytest.fixture
def ioc(unique_prefix, stream_ca_port):
    """(group, IocThread, recorder) of a fresh TomoStream IOC on the stream CA port."""
    recorder = Recorder()
    group = TomoStreamIOC(f"{unique_prefix}TS:", listener=recorder)
    thread = IocThread(group.pvdb, port=stream_ca_port, name="tomostream-test").start()
    try:
        yield group, thread, recorder
    finally:
        thread.stop()
