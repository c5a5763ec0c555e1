"""Messages between a process and a child of its own, over a socket.

Each message is a :class:`typing.NamedTuple` below, pickled and sent with its length in front
(4 bytes, network order), so that a reader may take the stream in blocks of any size and
get whole messages back (:class:`Inbox`). A :class:`Wire` is one end of the socket.

The receiving child (:mod:`.receive_process`) sends :class:`Ready`, then :class:`NewRing`,
:class:`FrameIn`, :class:`Dropped`, :class:`State` and :class:`Fatal`. The publishing child
(:mod:`.publish_process`) sends :class:`Ready`, :class:`Mapped` and :class:`Done`, and is sent
:class:`Map`, :class:`Forget`, :class:`Publish` and :class:`Close`.
"""

from __future__ import annotations

import collections
import pickle
import select
import socket
import struct
import threading
from typing import NamedTuple

_HEADER = struct.Struct("!I")
#: Most bytes read from the socket at once.
_READ_BYTES = 1 << 20


# -- both children ----------------------------------------------------------------------------
class Ready(NamedTuple):
    """The child is set up (its first message)."""

    pid: int


# -- the receiving child ----------------------------------------------------------------------
class NewRing(NamedTuple):
    """A new ring of frames (:class:`~tomostream.pva.ring.Ring`) to map."""

    ring: int
    path: str
    shape: tuple[int, int]
    dtype: str
    slots: int


class FrameIn(NamedTuple):
    """A good frame in slot ``slot`` of ring ``ring``; the child's counters and connection.
    ``timestamp`` and ``received`` [s since the POSIX epoch]."""

    ring: int
    slot: int
    unique_id: int
    timestamp: float
    received: float
    counters: dict
    connected: bool


class Dropped(NamedTuple):
    """A good frame dropped for want of a free slot (the parent holds them all)."""

    unique_id: int


class State(NamedTuple):
    """The child's counters, connection and last uniqueId, with a status text or None."""

    counters: dict
    connected: bool
    last_id: int | None
    text: str | None


class Fatal(NamedTuple):
    """The child cannot go on (e.g. no room for a ring), and why."""

    reason: str


# -- the publishing child ---------------------------------------------------------------------
class Map(NamedTuple):
    """Map the float32 image buffer ``slot`` of ``shape`` from the shared file ``path``."""

    slot: int
    path: str
    shape: tuple[int, int]


class Mapped(NamedTuple):
    """Buffer ``slot`` is mapped (its file's name is no longer needed)."""

    slot: int


class Forget(NamedTuple):
    """Drop the mapping of buffer ``slot`` (it was re-made)."""

    slot: int


class Publish(NamedTuple):
    """Publish buffer ``slot`` on channel ``name``, as
    :meth:`~tomostream.pva.publish_process.ProcessPublisher.submit` says."""

    slot: int
    name: str
    markers: tuple[int, int, int] | None
    n: int | None
    nz: int | None
    last_uid: int | None
    line_value: float | None


class Done(NamedTuple):
    """Buffer ``slot`` was published on ``name`` as ``unique_id`` (None: failed, ``error``
    says why) at ``time`` [s since the POSIX epoch], in ``seconds`` [s]."""

    slot: int
    name: str
    unique_id: int | None
    time: float
    seconds: float
    error: str | None


class Close(NamedTuple):
    """Stop serving and end."""


class Inbox:
    """Whole messages taken out of a stream of bytes read in blocks of any size."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data: bytes) -> list:
        """The messages that ``data`` completes, in order."""
        self._buf += data
        messages, pos, end = [], 0, len(self._buf)
        while end - pos >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buf, pos)
            if end - pos - _HEADER.size < size:
                break
            start = pos + _HEADER.size
            messages.append(pickle.loads(self._buf[start:start + size]))
            pos = start + size
        del self._buf[:pos]
        return messages


class Wire:
    """One end of a socket that carries messages: :meth:`send` from any thread,
    :meth:`receive` from one."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()
        self._inbox = Inbox()
        self._pending: collections.deque = collections.deque()

    def send(self, message: tuple) -> None:
        """Send ``message``; :class:`OSError` when the other end has gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            self.sock.sendall(_HEADER.pack(len(data)) + data)

    def receive(self, timeout: float | None) -> list:
        """The messages that came, waiting up to ``timeout`` [s] (None: forever) for some;
        an empty list when none came.

        Raises
        ------
        EOFError
            When the other end has closed the socket (or gone).
        """
        if self._pending:
            messages = list(self._pending)
            self._pending.clear()
            return messages
        try:
            readable, _, _ = select.select([self.sock], [], [], timeout)
            data = self.sock.recv(_READ_BYTES) if readable else None
        except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
            raise EOFError(str(exc)) from exc
        if data is None:
            return []
        if not data:
            raise EOFError("the other end closed the socket")
        return self._inbox.feed(data)

    def put_back(self, messages: list) -> None:
        """Have the next :meth:`receive` return ``messages`` first."""
        self._pending.extend(messages)

    def close(self) -> None:
        self.sock.close()
