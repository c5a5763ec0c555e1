"""The files TomoScan's streaming mode leaves in FilePath, written as the simulator's twin.

Per capture with base name ``<base>`` (FileName auto-incremented, e.g. ``stream_00003.h5``)::

    <base>                   StreamNumCapture frames after the trigger
    circular_buffer_<base>   the pre-trigger frames the circular buffer held (if any)
    dark_fields_<base>       copy of dark_fields.h5 at the time of the capture
    flat_fields_<base>       copy of flat_fields.h5

and the retaken fields, fixed names replaced at each retake::

    dark_fields.h5           /exchange/data_dark (frames of the last dark retake)
    flat_fields.h5           /exchange/data_white

A projection file holds ``/exchange/data`` (frames, rows, columns), ``/defaults/NDArrayUniqueId``
(one detector uniqueId per frame), ``/exchange/theta`` (float32 [degrees]) and, once the field
copy has run, ``/exchange/data_dark`` and ``/exchange/data_white``. TomoScan adds the fields from
a thread that may still run when StreamCapture reads Done; the simulator does the same (see
:meth:`~tomostream.sim.beamline.SimBeamline`'s ``field_copy_delay``). Unlike TomoScan, every
file appears whole: each version is written under a temporary name and renamed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..io.capture import FIELD_FILES, UNIQUE_IDS, field_copy_path
from ..io.dxfile import DARK, FLAT, copy_file, write_hdf5

#: Dataset of each kind of field.
FIELD_DATASETS = {"dark": DARK, "flat": FLAT}

__all__ = ["FIELD_DATASETS", "FIELD_FILES", "add_fields", "write_fields", "write_projections"]


def write_projections(path: str | Path, frames: np.ndarray, unique_ids, theta,
                      metadata: Mapping[str, Any] | None = None) -> Path:
    """Write one projection file as TomoScan's HDF5 plugin leaves it, before the field copy.

    Parameters
    ----------
    path : path
        Final name (never replaced).
    frames : array (n, rows, columns)
        Projections [detector counts].
    unique_ids : array (n,) of int
        Detector uniqueId of each frame (``/defaults/NDArrayUniqueId``).
    theta : array (n,) [degrees]
        Angle of each frame (``/exchange/theta``, float32).
    metadata : mapping, optional
        Instrument metadata, written under ``/measurement``.
    """
    frames = np.asarray(frames)

    def fill(f: h5py.File) -> None:
        f.attrs["implements"] = "exchange:measurement:process"
        data = f.create_dataset("exchange/data", data=frames, chunks=(1, *frames.shape[1:]))
        data.attrs["axes"] = "theta:y:x"
        f.create_dataset(UNIQUE_IDS, data=np.asarray(unique_ids, dtype=np.int32))
        f.create_dataset("exchange/theta", data=np.asarray(theta, dtype=np.float32))
        f["exchange/theta"].attrs["units"] = "degrees"
        for key, value in (metadata or {}).items():
            f.create_dataset(f"measurement/{key}", data=value)

    return write_hdf5(path, fill)


def write_fields(directory: str | Path, kind: str, frames: np.ndarray) -> Path:
    """Write (replacing) ``dark_fields.h5`` or ``flat_fields.h5`` in ``directory``.

    Parameters
    ----------
    directory : path
        FilePath.
    kind : {"dark", "flat"}
    frames : array (k, rows, columns)
        The retaken field frames [detector counts].
    """
    dataset = FIELD_DATASETS[kind]
    return write_hdf5(Path(directory) / FIELD_FILES[kind],
                      lambda f: f.create_dataset(dataset, data=np.asarray(frames)), replace=True)


def add_fields(path: str | Path) -> Path:
    """Copy the field files beside ``path`` to their per-capture names and add them to it.

    ``dark_fields.h5`` becomes ``dark_fields_<base>`` (``flat`` likewise), then ``path`` gets
    ``/exchange/data_dark`` and ``/exchange/data_white``: what TomoScan's field-copy thread does.
    """
    path = Path(path)
    fields = {}
    for kind, dataset in FIELD_DATASETS.items():
        copy = copy_file(path.parent / FIELD_FILES[kind], field_copy_path(path, kind))
        with h5py.File(copy, "r", locking=False) as f:
            fields[dataset] = f[dataset][()]

    def fill(f: h5py.File) -> None:
        for dataset, frames in fields.items():
            f.create_dataset(dataset, data=frames)

    return write_hdf5(path, fill, replace=True, base=path)

