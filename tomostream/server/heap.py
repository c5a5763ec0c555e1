"""Give freed heap memory back to the operating system.

The worker's NumPy temporaries (a push's normalised, padded and filtered frames, FFT spectra,
the published image) are a few MB each. Once glibc has freed one mmapped block of that size it
raises its mmap threshold, and later blocks of that size come from the heap (in a thread, from
the thread's arena); freed, they stay in the process. Over a day the resident memory then
wanders by tens of MB with the sizes that happened to meet, although nothing leaks.
``malloc_trim(0)`` hands the free pages of every arena back; the server calls
:func:`release_free_memory` once a heartbeat (it takes well under a millisecond).

Elsewhere than glibc (macOS, musl) the functions do nothing and say so.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        if not sys.platform.startswith("linux"):
            raise OSError(sys.platform)
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        log.debug("no malloc_trim in this C library: freed heap memory stays with the process")
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return the free pages of every heap arena to the OS; True if some were returned.

    False also where the C library cannot do it (not glibc).
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
