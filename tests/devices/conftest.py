"""Real IOCs on loopback for the device tests."""

from __future__ import annotations

import pytest

from tomostream.ioc import IocThread
from tomostream.ioc.tomostream_ioc import TomoStreamIOC


@pytest.fixture
def tomostream_ioc(unique_prefix, stream_ca_port):
    """(prefix, group, thread) of a TomoStream IOC served in this process on the stream CA port."""
    prefix = f"{unique_prefix}TS:"
    group = TomoStreamIOC(prefix)
    thread = IocThread(group.pvdb, port=stream_ca_port, name="tomostream-devices").start()
    try:
        yield prefix, group, thread
    finally:
        thread.stop()
