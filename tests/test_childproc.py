"""Processes that end with their parent, and shutdowns that cannot hang a server."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.timeout(120)

# a shutdown that hangs (a library's thread that never returns), bounded by exit_within
HANGING = textwrap.dedent("""
    import threading
    from tomostream.childproc import exit_within
    exit_within(0.5, "hanging server")
    threading.Event().wait()
""")


def test_a_hanging_shutdown_ends_the_process_and_says_so():
    done = subprocess.run([sys.executable, "-c", HANGING], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "hanging server: shutdown took more than 0.5 s; ending now" in done.stderr


def test_a_shutdown_that_ends_in_time_keeps_its_exit_status():
    code = "from tomostream.childproc import exit_within; exit_within(30, 'quick'); print('bye')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip(), done.stderr) == (0, "bye", "")


# a hang where no Python thread runs any more: only the alarm can end it
FROZEN = textwrap.dedent("""
    import ctypes
    from tomostream.childproc import exit_within
    exit_within(0.5, "frozen server")
    ctypes.PyDLL(None).pause()                        # in C, holding the GIL: no thread runs
""")


def test_a_shutdown_frozen_with_the_interpreter_is_ended_by_the_alarm():
    done = subprocess.run([sys.executable, "-c", FROZEN], capture_output=True, text=True, timeout=60)
    assert done.returncode == -signal.SIGALRM
