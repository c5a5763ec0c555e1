"""Start a child process that talks to this one over a socket: the receiving and the
publishing child of the stream server.

:func:`launch` runs ``python -c`` with a program that calls one function of a module with the
child's end of a socket pair and a configuration (JSON); the child ends with this process
(:func:`~tomostream.childproc.popen_with_parent`: with the thread that calls :func:`launch`).
The child opens its end with :func:`child_wire`, sets itself up and sends
:class:`~tomostream.pva.wire.Ready`; :meth:`Child.wait_ready` waits for that, at most
:data:`START_TIMEOUT`. (``python -m`` would run the child's module a second time beside the
copy that ``tomostream.pva`` imports, and runpy warns of that.)
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time

from ..childproc import popen_with_parent
from ..errors import TomostreamError
from .wire import Ready, Wire

#: Longest the start of a child (Python, NumPy, pvapy) may take [s].
START_TIMEOUT = 30.0
#: How often a wait for the child's start looks whether it was called off [s].
_POLL_S = 0.05
#: Bytes the child's end of the socket may hold unsent (its notices are small and many).
_SEND_BUFFER = 1 << 20


class Child:
    """A child process started by :func:`launch`, and the :class:`~tomostream.pva.wire.Wire`
    to it.

    Attributes
    ----------
    proc : subprocess.Popen
        The process.
    wire : Wire
        This process's end of the socket.
    who : str
        What the child is, for messages ("receiving process").
    """

    def __init__(self, proc: subprocess.Popen, wire: Wire, who: str):
        self.proc, self.wire, self.who = proc, wire, who

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, stop: threading.Event | None = None) -> bool:
        """Wait for the child's :class:`~tomostream.pva.wire.Ready`; messages sent after it
        stay for the next :meth:`Wire.receive`. Returns True once it came, False when ``stop``
        was set first (the child then still runs).

        Raises
        ------
        TomostreamError
            When the child ends, or has not started within :data:`START_TIMEOUT` (it is then
            killed).
        """
        deadline = time.monotonic() + START_TIMEOUT
        while stop is None or not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()
                raise TomostreamError(f"the {self.who} did not start within {START_TIMEOUT:.0f} s "
                                      f"(exit code {self.end()})")
            try:
                messages = self.wire.receive(min(left, _POLL_S))
            except EOFError:
                raise TomostreamError(f"the {self.who} ended as it started "
                                      f"(exit code {self.end()})") from None
            if messages:
                if not isinstance(messages[0], Ready):
                    self.proc.kill()
                    raise TomostreamError(f"the {self.who} began with {messages[0]!r}, not Ready "
                                          f"(exit code {self.end()})")
                self.wire.put_back(messages[1:])
                return True
        return False

    def end(self, timeout: float = 5.0) -> int:
        """Close the socket and wait up to ``timeout`` [s] for the child to end (then kill it);
        its exit code. Idempotent."""
        self.wire.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5.0)


def launch(module: str, function: str, config: dict, *, who: str,
           env: dict | None = None) -> Child:
    """Start ``python -c`` calling ``module.function(fd, config)`` in a child process, whose
    return value is the child's exit code; ``env``: its environment (default: this one's).

    Raises
    ------
    TomostreamError
        When the process cannot be started.
    """
    program = (f"import json, logging, sys; from {module} import {function}; "
               "logging.basicConfig(level=logging.WARNING); "
               f"sys.exit({function}(int(sys.argv[1]), json.loads(sys.argv[2])))")
    parent, child = socket.socketpair()
    try:
        proc = popen_with_parent([sys.executable, "-c", program, str(child.fileno()),
                                  json.dumps(config)], pass_fds=(child.fileno(),), env=env)
    except OSError as exc:
        parent.close()
        raise TomostreamError(f"cannot start the {who}: {exc}") from exc
    finally:
        child.close()
    return Child(proc, Wire(parent), who)


def child_wire(fd: int) -> Wire:  # pragma: no cover - runs in the child process
    """The child's end of the socket ``fd``; Ctrl-C in a terminal is for the parent, not it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
    return Wire(sock)
