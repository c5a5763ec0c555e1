"""A TomoScan streaming capture as one scan: its files, when they are complete, reading them.

TomoScan leaves, per capture with base name ``<base>`` (StreamFileName) in FilePath, the main
file ``<base>`` (the frames after the trigger) and ``circular_buffer_<base>`` (the frames from
before it, when the circular buffer held any), each with ``/exchange/data``,
``/defaults/NDArrayUniqueId``, ``/exchange/theta`` [degrees] and, added later by a thread,
``/exchange/data_dark`` and ``/exchange/data_white`` (copied from ``dark_fields_<base>`` and
``flat_fields_<base>``). :func:`read_capture` returns both as one scan, pre-trigger frames
first.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..errors import CaptureError
from .dxfile import DARK, DATA, FLAT, THETA

#: Detector uniqueId of each frame, written by the areaDetector HDF5 plugin.
UNIQUE_IDS = "/defaults/NDArrayUniqueId"
#: Prefix of the file of pre-trigger frames.
CIRCULAR_BUFFER_PREFIX = "circular_buffer_"
#: Field files a retake writes in FilePath.
FIELD_FILES = {"dark": "dark_fields.h5", "flat": "flat_fields.h5"}
#: Datasets a projection file holds once complete.
COMPLETE = (DATA, UNIQUE_IDS, THETA, DARK, FLAT)
#: Seconds to wait for a capture's files to be complete [s].
COMPLETE_TIMEOUT = 60.0


def circular_buffer_path(path: str | os.PathLike) -> Path:
    """``circular_buffer_<base>`` beside the main file ``path``."""
    path = Path(path)
    return path.with_name(CIRCULAR_BUFFER_PREFIX + path.name)


def field_copy_path(path: str | os.PathLike, kind: str) -> Path:
    """``dark_fields_<base>`` or ``flat_fields_<base>`` (``kind`` "dark" / "flat") beside ``path``."""
    path = Path(path)
    return path.with_name(f"{kind}_fields_{path.name}")


def missing_parts(path: str | os.PathLike) -> list[str]:
    """What ``path`` still lacks to be a complete projection file (empty list: complete).

    Returns
    -------
    list of str
        ``["file"]`` when it does not exist yet, ``["readable file (...)"]`` when it cannot be
        opened (still being written, or no permission), else the missing datasets.
    """
    path = Path(path)
    if not path.exists():
        return ["file"]
    try:
        with h5py.File(path, "r", locking=False) as f:
            return [name for name in COMPLETE if name not in f]
    except OSError as exc:
        return [f"readable file ({exc})"]


def wait_complete(paths, timeout: float = COMPLETE_TIMEOUT, poll: float = 0.05) -> None:
    """Wait until every file of ``paths`` is complete (see :func:`missing_parts`).

    Raises
    ------
    CaptureError
        After ``timeout`` [s], naming each incomplete file and what it lacks.
    """
    deadline = time.monotonic() + timeout
    while True:
        missing = {p: m for p in paths if (m := missing_parts(p))}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise incomplete_error(missing, timeout)
        time.sleep(poll)


def incomplete_error(missing: dict, timeout: float) -> CaptureError:
    """The error for files still incomplete after ``timeout`` [s]: ``{path: missing_parts}``."""
    detail = "; ".join(f"{p} lacks {', '.join(m)}" for p, m in missing.items())
    return CaptureError(f"capture not complete after {timeout:g} s: {detail}")


@dataclass(frozen=True)
class Capture:
    """One capture as one scan, pre-trigger frames first (time order).

    Attributes
    ----------
    projections : array (n, rows, columns)
        Frames [detector counts].
    theta : array (n,) [degrees]
        Angle of each frame (``np.radians(theta)`` for tomopy).
    dark, flat : array (k, rows, columns)
        Dark and flat (white) fields of the capture.
    unique_ids : array (n,) of int
        Detector uniqueId of each frame.
    pre_count : int
        How many of the frames come from before the trigger (the first ones).
    files : tuple of Path
        The projection files read, in order.
    """

    projections: np.ndarray
    theta: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    unique_ids: np.ndarray
    pre_count: int
    files: tuple[Path, ...]


def read_capture(source, index: int = -1) -> Capture:
    """Read a capture's frames, angles, fields and uniqueIds as one scan, pre-trigger first.

    Parameters
    ----------
    source : path or run
        The main file of a capture (``FilePath/StreamFileName``; its ``circular_buffer_`` file
        is read too when present), or a Bluesky run from the catalog, whose ``captures``
        stream names the files.
    index : int
        Which capture of a run (0 = first, -1 = last); ignored for a path.

    Raises
    ------
    CaptureError
        A file cannot be read or lacks a dataset.
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_files(Path(source))
    try:
        files = source["captures"].read()["captures_file"].values
    except KeyError as exc:
        raise CaptureError(f"run {source.metadata['start']['uid']} holds no capture") from exc
    return _read_files(Path(str(files[index])))


def _read_files(main: Path) -> Capture:
    pre = circular_buffer_path(main)
    paths = [p for p in (pre, main) if p.exists()] if main.exists() else [main]
    parts = [_read_one(p) for p in paths]
    return Capture(projections=np.concatenate([p[DATA] for p in parts]),
                   theta=np.concatenate([p[THETA] for p in parts]).astype(np.float64),
                   dark=parts[-1][DARK], flat=parts[-1][FLAT],
                   unique_ids=np.concatenate([p[UNIQUE_IDS] for p in parts]).astype(np.int64),
                   pre_count=len(parts[0][DATA]) if len(parts) == 2 else 0, files=tuple(paths))


def _read_one(path: Path) -> dict[str, np.ndarray]:
    try:
        with h5py.File(path, "r", locking=False) as f:
            missing = [name for name in COMPLETE if name not in f]
            if missing:
                raise CaptureError(f"{path} lacks {', '.join(missing)}")
            return {name: f[name][()] for name in COMPLETE}
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
