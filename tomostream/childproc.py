"""Child processes that end with their parent.

The simulator started by a benchmark and the stream server's publishing process must not
outlive the process that started them: one left behind keeps serving its channels and
misleads whoever comes next. On Linux the child asks, between fork and exec, for SIGTERM when
its parent goes (``prctl(PR_SET_PDEATHSIG)``). The signal follows the *thread* that started the
child, so start it from a thread that lives as long as the child should.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

#: prctl option asking for a signal when the parent process ends (Linux).
_PR_SET_PDEATHSIG = 1
#: Longest a command-line server may take to shut down once asked to (Ctrl-C, SIGTERM, its
#: parent gone) before it ends at once [s].
STOP_GRACE = 15.0


def _end_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_within(seconds: float, who: str) -> None:
    """End this process ``seconds`` from now, should its shutdown not have ended it by then.

    A server asked to stop (Ctrl-C, SIGTERM, the parent-death signal) closes its channels and
    threads; a third-party library that hangs there must not keep it (and its ports) alive. A
    thread says so and ends the process; should even that thread no longer run (a hang while
    the interpreter finalizes), SIGALRM ends it a few seconds later, by the kernel's hand.
    """
    def force() -> None:
        time.sleep(seconds)
        print(f"{who}: shutdown took more than {seconds:g} s; ending now", file=sys.stderr, flush=True)
        os._exit(1)

    threading.Thread(target=force, name="exit-within", daemon=True).start()
    if hasattr(signal, "alarm"):
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(int(seconds) + 5)


def popen_with_parent(args: Sequence[str], **popen) -> subprocess.Popen:
    """:class:`subprocess.Popen` of ``args`` that ends (SIGTERM) when this process does, on
    Linux; elsewhere a plain Popen. ``popen`` goes to Popen."""
    end = _end_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(list(args), preexec_fn=end, **popen)
