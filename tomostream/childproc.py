"""Child processes that end with their parent.

The simulator started by a benchmark and the stream server's publishing process must not
outlive the process that started them: one left behind keeps serving its channels and
misleads whoever comes next. On Linux the child asks, between fork and exec, for SIGTERM when
its parent goes (``prctl(PR_SET_PDEATHSIG)``). The signal follows the *thread* that started the
child, so start it from a thread that lives as long as the child should.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Sequence

#: prctl option asking for a signal when the parent process ends (Linux).
_PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def popen_with_parent(args: Sequence[str], **popen) -> subprocess.Popen:
    """:class:`subprocess.Popen` of ``args`` that ends (SIGTERM) when this process does, on
    Linux; elsewhere a plain Popen. ``popen`` goes to Popen."""
    end = _end_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(list(args), preexec_fn=end, **popen)
