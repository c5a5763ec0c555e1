"""Children started by the launcher: a start that fails or stalls is said, never waited out."""

from __future__ import annotations

import threading

import pytest

from tomostream.errors import TomostreamError
from tomostream.pva import launcher


def test_a_child_that_ends_as_it_starts_says_so():
    child = launcher.launch("os", "_exit", {}, who="test process")  # os._exit(fd, {}): TypeError
    with pytest.raises(TomostreamError, match=r"the test process ended as it started \(exit code 1\)"):
        child.wait_ready()
    assert not child.alive


def test_a_child_that_does_not_answer_is_killed(monkeypatch):
    monkeypatch.setattr(launcher, "START_TIMEOUT", 0.5)
    child = launcher.launch("os", "read", 1, who="test process")  # os.read(fd, 1): waits
    with pytest.raises(TomostreamError, match=r"the test process did not start within 0 s "
                                              r"\(exit code -9\)"):
        child.wait_ready()


def test_a_wait_called_off_leaves_the_child_to_the_caller():
    stop = threading.Event()
    stop.set()
    child = launcher.launch("os", "read", 1, who="test process")
    try:
        assert child.wait_ready(stop) is False and child.alive
    finally:
        child.end()                             # its read ends with the socket
    assert not child.alive


def test_a_program_that_cannot_run_says_so(monkeypatch):
    monkeypatch.setattr(launcher.sys, "executable", "/nonexistent/python")
    with pytest.raises(TomostreamError, match="cannot start the test process"):
        launcher.launch("os", "read", 1, who="test process")
