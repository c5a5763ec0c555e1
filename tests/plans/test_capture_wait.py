"""Which files a capture is recorded from, and when (plan_stubs.wait_capture_files).

TomoScan's field-copy thread completes the main file as soon as it is written, so the main file
can be complete before ``circular_buffer_<base>`` exists: StreamNumTotalCaptured says whether
one is to come. Driven message by message, the files appearing between two polls.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tomostream.errors import CaptureError
from tomostream.io.capture import circular_buffer_path
from tomostream.plans.plan_stubs import wait_capture_files
from tomostream.sim.files import add_fields, write_fields, write_projections


@pytest.fixture
def folder(tmp_path):
    write_fields(tmp_path, "dark", np.zeros((2, 4, 6), np.uint16))
    write_fields(tmp_path, "flat", np.ones((2, 4, 6), np.uint16))
    return tmp_path


def _write(path, frames: int, complete: bool = True):
    write_projections(path, np.zeros((frames, 4, 6), np.uint16), range(frames),
                      np.arange(frames, dtype=float))
    if complete:
        add_fields(path)


def _drive(plan, at_sleep=None):
    """Run ``plan`` without a RunEngine; ``at_sleep(k)`` runs at its k-th sleep. Returns
    (return value, sleeps)."""
    sleeps = 0
    try:
        msg = next(plan)
        while True:
            if msg.command == "sleep":
                sleeps += 1
                if at_sleep is not None:
                    at_sleep(sleeps)
            msg = plan.send(None)
    except StopIteration as stop:
        return stop.value, sleeps


def test_a_complete_main_file_waits_for_the_circular_buffer_the_count_announces(folder):
    main = folder / "scan_00001.h5"
    pre = circular_buffer_path(main)
    _write(main, 10)                                  # complete, the buffer's file not yet written

    def later(k):
        if k == 3:
            _write(pre, 5, complete=False)            # written, fields not yet copied
        if k == 6:
            add_fields(pre)

    files, sleeps = _drive(wait_capture_files(main, saved=15, timeout=30, poll=0.01), later)
    assert files == [pre, main] and sleeps >= 6


def test_fields_landing_while_the_main_file_is_judged_still_wait_for_the_buffer(folder, monkeypatch):
    """The field-copy thread completes the main file just after a poll found it incomplete: the
    poll must not then take it, complete, as the whole capture."""
    from tomostream.plans import plan_stubs

    main = folder / "scan_00005.h5"
    pre = circular_buffer_path(main)
    _write(main, 10, complete=False)
    judged = plan_stubs.missing_parts

    def copier_finishes_right_after(path):
        missing = judged(path)
        if path == main and missing:
            add_fields(main)                          # the copy lands between two looks
        return missing

    monkeypatch.setattr(plan_stubs, "missing_parts", copier_finishes_right_after)

    def later(k):
        if k == 3:
            _write(pre, 5)

    files, _ = _drive(wait_capture_files(main, saved=15, timeout=30, poll=0.01), later)
    assert files == [pre, main]


def test_a_capture_without_circular_buffer_is_the_main_file_alone(folder):
    main = folder / "scan_00002.h5"
    _write(main, 10)
    files, sleeps = _drive(wait_capture_files(main, saved=10, timeout=30, poll=0.01))
    assert files == [main] and sleeps == 0


def test_a_circular_buffer_file_is_recorded_whatever_the_count_said(folder, caplog):
    main = folder / "scan_00003.h5"
    _write(main, 10)
    _write(circular_buffer_path(main), 4)
    with caplog.at_level(logging.WARNING, logger="tomostream.plans.plan_stubs"):
        files, _ = _drive(wait_capture_files(main, saved=10, timeout=30, poll=0.01))
    assert files == [circular_buffer_path(main), main]
    assert "grew by 10, the files hold 4 + 10" in caplog.text


def test_a_circular_buffer_that_never_comes_is_named_in_the_error(folder):
    main = folder / "scan_00004.h5"
    _write(main, 10)
    with pytest.raises(CaptureError, match="circular_buffer_scan_00004.h5"):
        _drive(wait_capture_files(main, saved=15, timeout=0.2, poll=0.01))
