"""Files in shared memory (``/dev/shm``) that two processes map: how images and frames cross
between the stream server and its publishing and receiving processes without being pickled.

The space of a file is reserved before it is written: writing into a mapping that a full file
system cannot back would end the process (SIGBUS), so a full ``/dev/shm`` is a
:class:`~tomostream.errors.TomostreamError` instead. A file is reserved whole when it is made
(and its mappings populated at once, ``MAP_POPULATE``, so the first pass over them takes no
page faults), or part by part before each part is first written (:func:`reserve`), so that a
large ring of frames costs nothing until it is used.
"""

from __future__ import annotations

import mmap
import os
import tempfile

from ..errors import TomostreamError

#: Where shared files live (a RAM file system); without it, no child process can share.
SHM_DIR = "/dev/shm"
#: Page size the slots in a shared file are aligned to [bytes].
PAGE = mmap.PAGESIZE

_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


def available() -> bool:
    """Whether shared files can be made here."""
    return os.path.isdir(SHM_DIR)


def create(nbytes: int, prefix: str = "tomostream-", what: str = "buffer", *,
           reserve: bool = True) -> tuple[str, mmap.mmap]:
    """A new file of ``nbytes`` in :data:`SHM_DIR`, mapped: ``(path, mapping)``.

    ``reserve``: take its space (and map its pages) now; else the file is sparse and each part
    must be given its space with :func:`reserve` before it is written.

    Raises
    ------
    TomostreamError
        When :data:`SHM_DIR` has no room for it (the message names ``what``).
    """
    nbytes = max(int(nbytes), 1)
    fd, path = tempfile.mkstemp(prefix=prefix, dir=SHM_DIR)
    try:
        if reserve:
            _fallocate(fd, 0, nbytes, what)
        else:
            os.ftruncate(fd, nbytes)
        return path, mmap.mmap(fd, nbytes, flags=_FLAGS if reserve else mmap.MAP_SHARED)
    except (OSError, TomostreamError):
        unlink(path)
        raise
    finally:
        os.close(fd)


def reserve(fd: int, offset: int, length: int, what: str = "buffer") -> None:
    """Take the space of bytes ``offset`` to ``offset + length`` of a file made with
    ``reserve=False``; :class:`TomostreamError` when there is no room (naming ``what``)."""
    _fallocate(fd, offset, length, what)


def _fallocate(fd: int, offset: int, length: int, what: str) -> None:
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as exc:
        size = f"{length / 1e6:.0f} MB" if length >= 1e6 else f"{length / 1e3:.0f} kB"
        raise TomostreamError(f"no room for a {size} {what} in {SHM_DIR}: {exc}") from exc


def attach(path: str, populate: bool = True) -> mmap.mmap:
    """Map the whole of a shared file another process made (its pages at once when
    ``populate``: not for a sparse file, whose holes would be filled)."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 0, flags=_FLAGS if populate else mmap.MAP_SHARED)


def unlink(path: str | None) -> None:
    """Remove a shared file's name (mappings stay valid); nothing if it has gone already."""
    if path is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def align(nbytes: int) -> int:
    """``nbytes`` rounded up to whole pages."""
    return -(-int(nbytes) // PAGE) * PAGE
