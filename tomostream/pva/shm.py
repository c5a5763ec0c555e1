"""Files in shared memory (``/dev/shm``) that two processes map: how images and frames cross
between the stream server and its publishing and receiving processes without being pickled.

The space of a file is reserved when it is made: writing into a mapping that a full file
system cannot back would end the process (SIGBUS), so a full ``/dev/shm`` is a
:class:`~tomostream.errors.TomostreamError` when the file is made instead. Mappings are
populated at once (``MAP_POPULATE``), so the first pass over them takes no page faults.
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


def create(nbytes: int, prefix: str = "tomostream-", what: str = "buffer") -> tuple[str, mmap.mmap]:
    """A new file of ``nbytes`` in :data:`SHM_DIR`, mapped: ``(path, mapping)``.

    Raises
    ------
    TomostreamError
        When :data:`SHM_DIR` has no room for it (the message names ``what``).
    """
    nbytes = max(int(nbytes), 1)
    fd, path = tempfile.mkstemp(prefix=prefix, dir=SHM_DIR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        return path, mmap.mmap(fd, nbytes, flags=_FLAGS)
    except OSError as exc:
        unlink(path)
        raise TomostreamError(f"no room for a {nbytes / 1e6:.0f} MB {what} in {SHM_DIR}: "
                              f"{exc}") from exc
    finally:
        os.close(fd)


def attach(path: str) -> mmap.mmap:
    """Map the whole of a shared file another process made."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 0, flags=_FLAGS)


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
