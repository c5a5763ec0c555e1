"""Fixtures for the PV Access tests: a pvapy server, a p4p client, polling helpers."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tomostream.pva.server import PvaChannels


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something true; fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {timeout} s")
        time.sleep(0.005)


@pytest.fixture
def wait() -> Callable[..., object]:
    """``wait(predicate, timeout=30.0, what=...)``: poll until true or fail (generous: a
    loaded 2-core machine can hold a thread for seconds)."""
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
