"""Data Exchange (DXfile) HDF5 captures: write atomically, read back and verify.

Layout (what tomocupy, tomopy/dxchange and the APS tools read unchanged)::

    /exchange/data          (n_angles, nz, n)  projections, detector counts
    /exchange/data_dark     (n_dark, nz, n)    dark field(s)
    /exchange/data_white    (n_flat, nz, n)    flat (white) field(s)
    /exchange/theta         (n_angles,)        rotation angle of each projection [degrees]
    /measurement/...                           instrument metadata (one dataset per key)
    /process/acquisition/frame_count           number of projections written
    /process/acquisition/unique_ids            (n_angles,) detector uniqueId of each projection
    /process/acquisition/sha256                SHA-256 of /exchange/data (C order, raw bytes)
    /process/acquisition/created               ISO 8601 time the file was completed

A file is built in memory, written under a hidden temporary name in its final folder, flushed
to disk and only then given its final name with a hard link, which fails if that name exists:
a reader never sees a half-written capture and an existing file is never overwritten.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import BadParameter, CaptureError

DATA = "/exchange/data"
DARK = "/exchange/data_dark"
FLAT = "/exchange/data_white"
THETA = "/exchange/theta"
ACQ = "/process/acquisition"
MEASUREMENT = "/measurement"

_NUMBERED = "{stem}_{number:05d}{suffix}"
_WRITE_BLOCK = 64 << 20   # bytes per os.write


def data_checksum(data: np.ndarray) -> str:
    """SHA-256 (hex) of an array's raw bytes in C order: what a DXfile records for its data."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(data)
    for frame in arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else [arr]:
        h.update(frame.tobytes())
    return h.hexdigest()


def _as_stack(name: str, array, nz: int, n: int) -> np.ndarray:
    """Dark / flat as (k, nz, n): a single 2-D field becomes one frame."""
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (nz, n):
        raise BadParameter(f"{name} has shape {np.shape(array)}; expected (nz, n) or (k, nz, n) "
                           f"with nz={nz}, n={n}")
    return arr


def check_file_name(file_name: str) -> str:
    """Return ``file_name``, or raise CaptureError if it could leave its folder (FileName)."""
    if not file_name or not file_name.strip():
        raise CaptureError(f"FileName={file_name!r} is empty")
    if "\x00" in file_name:
        raise CaptureError(f"FileName={file_name!r} contains a NUL character")
    if os.path.isabs(file_name) or file_name.startswith(("/", "\\", "~")):
        raise CaptureError(f"FileName={file_name!r} is an absolute path; give a name inside FilePath")
    parts = re.split(r"[\\/]", file_name)
    if any(p in ("..", ".") for p in parts):
        raise CaptureError(f"FileName={file_name!r} contains '..' or '.'; give a name inside FilePath")
    if len(parts) > 1:
        raise CaptureError(f"FileName={file_name!r} contains a folder separator; give a plain name")
    return file_name


def check_directory(directory: str | os.PathLike) -> Path:
    """Return ``directory`` resolved, or raise CaptureError if it is not a writable folder."""
    if not str(directory).strip():
        raise CaptureError("FilePath is empty; set it to an existing writable folder")
    path = Path(directory)
    if not path.is_dir():
        raise CaptureError(f"FilePath={str(directory)!r} does not exist or is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise CaptureError(f"FilePath={str(directory)!r} is not writable")
    return path.resolve()


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def next_capture_path(directory: str | os.PathLike, file_name: str) -> Path:
    """The next unused numbered file name for a capture, inside ``directory``.

    ``file_name`` ``"sample"`` or ``"sample.h5"`` gives ``sample_00001.h5``, then
    ``sample_00002.h5``, ...: one more than the highest number already there, so a new
    capture never replaces an old one even if earlier numbers were deleted.

    Parameters
    ----------
    directory : path
        Existing writable folder (TomoScan's FilePath).
    file_name : str
        Plain file name (TomoScan's FileName): no folders, no ``..``, not absolute.

    Raises
    ------
    CaptureError
        The folder is missing or not writable, the name is refused, or the candidate path
        would resolve outside ``directory`` (a symbolic link pointing elsewhere).
    """
    root = check_directory(directory)
    name = check_file_name(file_name)
    stem, suffix = os.path.splitext(name)
    if suffix.lower() not in (".h5", ".hdf5", ".hdf"):
        stem, suffix = name, ".h5"
    pattern = re.compile(re.escape(stem) + r"_(\d+)" + re.escape(suffix) + r"$")
    numbers = [int(m.group(1)) for entry in os.listdir(root) if (m := pattern.match(entry))]
    number = max(numbers, default=0) + 1
    while True:
        candidate = root / _NUMBERED.format(stem=stem, number=number, suffix=suffix)
        if not candidate.exists() and not candidate.is_symlink():
            break
        number += 1
    if not _inside(candidate.parent, root) or candidate.parent.resolve() != root:
        raise CaptureError(f"FileName={file_name!r} resolves outside FilePath={str(directory)!r}")
    return candidate


def _write_metadata(group: h5py.Group, metadata: Mapping[str, Any]) -> None:
    """Write ``{"instrument/detector/exposure_time": 0.01, ...}`` as datasets under ``group``."""
    for key, value in metadata.items():
        if value is None:
            continue
        name = str(key).strip("/")
        if isinstance(value, Mapping):
            _write_metadata(group.require_group(name), value)
        elif isinstance(value, str):
            group.create_dataset(name, data=value, dtype=h5py.string_dtype())
        else:
            group.create_dataset(name, data=np.asarray(value))


def write_dxfile(path: str | os.PathLike, data, dark, flat, theta, *, unique_ids=None,
                 metadata: Mapping[str, Any] | None = None,
                 process: Mapping[str, Any] | None = None) -> Path:
    """Write one capture as a DXfile, atomically, never replacing an existing file.

    Parameters
    ----------
    path : path
        Final file name (see :func:`next_capture_path`). Its folder must exist.
    data : array (n_angles, nz, n)
        Projections [detector counts], uint8/uint16/float32 kept as given.
    dark, flat : array (nz, n) or (k, nz, n)
        Dark and flat (white) fields [detector counts].
    theta : array (n_angles,) [degrees]
        Rotation angle of each projection.
    unique_ids : array (n_angles,) of int, optional
        Detector uniqueId of each projection (``-1`` when unknown).
    metadata : mapping, optional
        Instrument metadata, written under ``/measurement``; keys may contain ``/``
        (``"instrument/detector/exposure_time"``) or nest mappings.
    process : mapping, optional
        Processing notes, written under ``/process`` beside ``/process/acquisition``.

    Returns
    -------
    Path
        The final path.

    Raises
    ------
    BadParameter
        Shapes disagree.
    CaptureError
        The file exists, the folder is not writable, or writing failed (disk full, ...); no
        partial file is left behind.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise BadParameter(f"data has shape {data.shape}; expected (n_angles, nz, n)")
    n_angles, nz, n = data.shape
    dark = _as_stack("dark", dark, nz, n)
    flat = _as_stack("flat", flat, nz, n)
    theta = np.asarray(theta, dtype=np.float64).reshape(-1)
    if theta.size != n_angles:
        raise BadParameter(f"theta has {theta.size} angles for {n_angles} projections")
    ids = (np.full(n_angles, -1, dtype=np.int64) if unique_ids is None
           else np.asarray(unique_ids, dtype=np.int64).reshape(-1))
    if ids.size != n_angles:
        raise BadParameter(f"unique_ids has {ids.size} entries for {n_angles} projections")

    def fill(f: h5py.File) -> None:
        f.attrs["implements"] = "exchange:measurement:process"
        exchange = f.create_group("exchange")
        exchange.create_dataset("data", data=data, chunks=(1, nz, n) if n_angles else None)
        exchange["data"].attrs["axes"] = "theta:y:x"
        exchange.create_dataset("data_dark", data=dark)
        exchange.create_dataset("data_white", data=flat)
        exchange.create_dataset("theta", data=theta)
        exchange["theta"].attrs["units"] = "degrees"
        _write_metadata(f.require_group(MEASUREMENT), metadata or {})
        acq = f.require_group(ACQ)
        acq.create_dataset("frame_count", data=np.int64(n_angles))
        acq.create_dataset("unique_ids", data=ids)
        acq.create_dataset("sha256", data=data_checksum(data), dtype=h5py.string_dtype())
        acq.create_dataset("created", data=_dt.datetime.now(_dt.UTC).isoformat(),
                           dtype=h5py.string_dtype())
        _write_metadata(f["process"], process or {})

    return write_hdf5(path, fill)


def write_hdf5(path: str | os.PathLike, fill: Callable[[h5py.File], None], *,
               replace: bool = False, base: str | os.PathLike | None = None) -> Path:
    """Write an HDF5 file atomically: ``fill(f)`` builds it in memory, then it appears whole.

    The file is built in memory, written under a hidden temporary name in its final folder,
    flushed to disk and only then given its final name, so a reader never sees a half-written
    file.

    Parameters
    ----------
    path : path
        Final file name; its folder must exist.
    fill : callable
        ``fill(f)`` creates the datasets of the open in-memory ``h5py.File`` ``f``.
    replace : bool
        Replace an existing ``path`` (atomically: a reader sees the old file or the new one);
        False: fail if ``path`` exists (a hard link, which refuses an existing name).
    base : path, optional
        Start from a copy of this file's content (``fill`` then adds to it) instead of an
        empty file.

    Returns
    -------
    Path
        The final path.

    Raises
    ------
    CaptureError
        ``path`` exists (and ``replace`` is False), the folder is missing or not writable, or
        writing failed (disk full, ...); no partial file is left behind.
    """
    path = Path(path)
    if not replace and (path.exists() or path.is_symlink()):
        raise CaptureError(f"{path} exists; a capture never overwrites a file")
    if not path.parent.is_dir():
        raise CaptureError(f"folder {str(path.parent)!r} of {path.name} does not exist")
    # HDF5 is built in memory and written with plain os.write: a write that fails half way
    # (disk full, quota) is then a clean OSError; HDF5's own file driver can crash the
    # process when the disk fills under it.
    try:
        if base is None:
            f = h5py.File(f"{path.name}-image", "w", driver="core", backing_store=False)
        else:
            f = h5py.File(base, "r+", driver="core", backing_store=False, locking=False)
    except OSError as exc:
        raise CaptureError(f"cannot read {base}: {exc}") from exc
    with f:
        fill(f)
        f.flush()
        image = memoryview(f.id.get_file_image())
    _write_bytes(path, image, replace)
    return path


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy ``source`` to ``path`` atomically, never replacing an existing ``path``."""
    path = Path(path)
    try:
        image = Path(source).read_bytes()
    except OSError as exc:
        raise CaptureError(f"cannot read {source}: {exc.strerror or exc}") from exc
    if path.exists() or path.is_symlink():
        raise CaptureError(f"{path} exists; a capture never overwrites a file")
    _write_bytes(path, memoryview(image), replace=False)
    return path


def _write_bytes(path: Path, image: memoryview, replace: bool) -> None:
    """Write ``image`` to a temporary file beside ``path``, fsync it, give it its final name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            done = 0
            while done < len(image):
                done += os.write(fd, image[done:done + _WRITE_BLOCK])
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)        # fails if `path` appeared meanwhile: no overwrite
    except FileExistsError as exc:
        raise CaptureError(f"{path} exists; a capture never overwrites a file") from exc
    except OSError as exc:
        raise CaptureError(f"writing {path} failed: {exc.strerror or exc}") from exc
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _read_group(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_group(item)
        else:
            value = item[()]
            out[key] = value.decode() if isinstance(value, bytes) else value
    return out


def read_dxfile(path: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """Read a DXfile written by :func:`write_dxfile` (or any file with the exchange layout).

    Parameters
    ----------
    path : path
    verify : bool
        Check the recorded frame count, uniqueId count and SHA-256 against the data.

    Returns
    -------
    dict
        ``data``, ``dark``, ``flat`` (arrays), ``theta`` [degrees], ``unique_ids``,
        ``frame_count``, ``sha256`` (None where absent), ``measurement`` and ``process``
        (nested dicts) and ``path``.

    Raises
    ------
    CaptureError
        The file cannot be opened, lacks an exchange dataset, or fails verification.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r", locking=False) as f:
            missing = [p for p in (DATA, DARK, FLAT, THETA) if p not in f]
            if missing:
                raise CaptureError(f"{path} lacks {', '.join(missing)}")
            out: dict[str, Any] = {
                "path": path,
                "data": f[DATA][()],
                "dark": f[DARK][()],
                "flat": f[FLAT][()],
                "theta": f[THETA][()],
                "measurement": _read_group(f[MEASUREMENT]) if MEASUREMENT in f else {},
                "process": _read_group(f["process"]) if "process" in f else {},
            }
    except OSError as exc:
        raise CaptureError(f"cannot read capture {path}: {exc}") from exc
    acq = out["process"].get("acquisition", {})
    out["frame_count"] = int(acq["frame_count"]) if "frame_count" in acq else None
    out["unique_ids"] = np.asarray(acq["unique_ids"]) if "unique_ids" in acq else None
    out["sha256"] = acq.get("sha256")
    if verify:
        _verify(out)
    return out


def _verify(content: dict[str, Any]) -> None:
    path, data = content["path"], content["data"]
    problems = []
    if content["frame_count"] is None or content["sha256"] is None:
        problems.append("no /process/acquisition frame_count or sha256 recorded")
    else:
        if content["frame_count"] != data.shape[0]:
            problems.append(f"frame_count={content['frame_count']} but data has {data.shape[0]} frames")
        if data_checksum(data) != content["sha256"]:
            problems.append("SHA-256 of /exchange/data does not match the recorded one")
    if content["theta"].shape[0] != data.shape[0]:
        problems.append(f"theta has {content['theta'].shape[0]} angles for {data.shape[0]} frames")
    ids = content["unique_ids"]
    if ids is not None and ids.shape[0] != data.shape[0]:
        problems.append(f"unique_ids has {ids.shape[0]} entries for {data.shape[0]} frames")
    if problems:
        raise CaptureError(f"capture {path} failed verification: " + "; ".join(problems))
