"""Fixtures for the PV Access tests: a pvapy server, a p4p client, polling helpers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import wait_until

from tomostream.pva.server import PvaChannels


@pytest.fixture
def wait() -> Callable[..., object]:
    """The polling helper :func:`helpers.wait_until`."""
    return wait_until


@pytest.fixture
def channels():
    """A started pvapy server, stopped after the test."""
    with PvaChannels() as served:
        yield served


@pytest.fixture
def p4p_ctx():
    """An independent PV Access client (p4p)."""
    from p4p.client.thread import Context

    ctx = Context("pva")
    yield ctx
    ctx.close()


@pytest.fixture
def p4p_server():
    """``serve(name, initial, nt=None) -> SharedPV``: serve a channel from an independent p4p server."""
    from p4p.server import Server
    from p4p.server.thread import SharedPV

    servers = []

    def serve(name: str, initial, nt=None) -> SharedPV:
        pv = SharedPV(nt=nt, initial=initial)
        servers.append(Server(providers=[{name: pv}]))
        return pv

    yield serve
    for server in servers:
        server.stop()
