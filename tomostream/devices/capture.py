"""Captures recorded in a Bluesky run, their data referenced in the files TomoScan wrote.

A capture is two projection files in FilePath (``circular_buffer_<base>`` with the pre-trigger
frames, ``<base>`` with the rest; see :mod:`tomostream.io.capture`). Two objects record it:

- :class:`CaptureFrames` (stream ``capture``, collected): one row per frame, pre-trigger
  frames first, keys ``capture_projections`` (rows, columns), ``capture_theta`` [degrees] and
  ``capture_unique_id``, each a StreamResource/StreamDatum into the files (nothing copied).
  Captures of a run append rows, whatever their sizes.
- :class:`CaptureRecorder` (stream ``captures``, one event per capture): the main file, the
  frames before the trigger, the first row and the number of rows in ``capture``, and the
  slices at trigger time, snapshotted into storage the catalog owns.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import h5py
import numpy as np
from event_model import compose_stream_resource

from ..errors import CaptureError
from ..io.capture import DATA, THETA, UNIQUE_IDS

#: Dataset of the slices snapshot in its HDF5 file.
SLICES_DATASET = "/slices"
HDF5 = "application/x-hdf5"


def write_snapshot(path: Path, image: np.ndarray) -> Path:
    """Write the slices at trigger time as ``/slices`` of shape (1, rows, 3n) into ``path``."""
    with h5py.File(path, "x") as f:
        f.create_dataset(SLICES_DATASET.lstrip("/"), data=np.asarray(image, np.float32)[None])
    return path


def _asset(key: str, path: Path, dataset: str, rows: int, chunk: list[int] | None = None):
    """StreamResource + StreamDatum documents for ``rows`` rows of ``dataset`` in ``path``.

    ``chunk`` (the same for every file of a key) is how a reader fetches it, e.g. by frame.
    """
    parameters = {"dataset": dataset, "join_method": "stack"}
    if chunk is not None:
        parameters["chunk_shape"] = chunk
    bundle = compose_stream_resource(mimetype=HDF5, uri=f"file://localhost{path}", data_key=key,
                                     parameters=parameters)
    return [("stream_resource", bundle.stream_resource_doc),
            ("stream_datum", bundle.compose_stream_datum(indices={"start": 0, "stop": rows}))]


class CaptureFrames:
    """Every captured frame of a run as rows of a collected stream (WritesStreamAssets).

    Parameters
    ----------
    name : str
        Stream and data key prefix: ``<name>_projections``, ``<name>_theta``,
        ``<name>_unique_id``.
    """

    def __init__(self, name: str = "capture"):
        self.name = name
        self.parent = None
        self.declared = False
        self._pending: list[list[tuple[str, dict]]] = []   # asset documents, one list per file
        self._index = 0
        self._describe: dict | None = None

    @property
    def pending(self) -> int:
        """Files added but not collected yet; each needs its own ``collect`` (rows of one
        collect must be as many for every key, and files differ in length)."""
        return len(self._pending)

    def add(self, files: list[Path]) -> int:
        """Add the frames of ``files`` (complete projection files, in time order) as rows.

        Returns
        -------
        int
            Rows added.

        Raises
        ------
        CaptureError
            A file cannot be read, or its frames differ in shape or type from earlier ones.
        """
        added = 0
        for path in files:
            try:
                with h5py.File(path, "r", locking=False) as f:
                    rows, shape, dtype = f[DATA].shape[0], list(f[DATA].shape[1:]), f[DATA].dtype
                    kinds = {THETA: f[THETA].dtype, UNIQUE_IDS: f[UNIQUE_IDS].dtype}
            except (OSError, KeyError) as exc:
                raise CaptureError(f"capture file {str(path)!r} cannot be read: {exc}") from exc
            describe = {
                f"{self.name}_projections": {"source": f"file:{path}", "dtype": "array", "shape": shape,
                                             "dtype_numpy": dtype.str, "external": "STREAM:"},
                f"{self.name}_theta": {"source": f"file:{path}", "dtype": "number", "shape": [],
                                       "dtype_numpy": kinds[THETA].str, "external": "STREAM:",
                                       "units": "degrees"},
                f"{self.name}_unique_id": {"source": f"file:{path}", "dtype": "integer", "shape": [],
                                           "dtype_numpy": kinds[UNIQUE_IDS].str, "external": "STREAM:"},
            }
            if self._describe is not None:
                old = self._describe[f"{self.name}_projections"]
                if (old["shape"], old["dtype_numpy"]) != (shape, dtype.str):
                    raise CaptureError(f"capture file {str(path)!r} holds frames {shape} {dtype}, earlier "
                                       f"captures of this run {old['shape']} {old['dtype_numpy']}: "
                                       "keep StreamBinning within a run")
            self._describe = self._describe or describe
            self._pending.append(_asset(f"{self.name}_projections", path, DATA, rows, [1, *shape])
                                 + _asset(f"{self.name}_theta", path, THETA, rows)
                                 + _asset(f"{self.name}_unique_id", path, UNIQUE_IDS, rows))
            added += rows
        self._index += added
        return added

    # --- bluesky protocols: Collectable, WritesStreamAssets ------------------------------------
    def describe_collect(self) -> dict:
        if self._describe is None:
            raise CaptureError(f"{self.name}: no capture recorded yet")
        return dict(self._describe)

    def collect_asset_docs(self, index: int | None = None):
        """The documents of the oldest file not collected yet."""
        if self._pending:
            yield from self._pending.pop(0)

    def get_index(self) -> int:
        return self._index


class CaptureRecorder:
    """The latest capture, readable as one event of the ``captures`` stream.

    Parameters
    ----------
    name : str
        Prefix of the data keys: ``<name>_file``, ``<name>_pre_counted``, ``<name>_first_row``,
        ``<name>_rows``, ``<name>_slices``.
    snapshot_dir : path, optional
        Folder owned by the catalog (e.g. :func:`tomostream.io.catalog.snapshot_dir`) for the
        slices at trigger time; None records no snapshot.
    frames : CaptureFrames, optional
        Where the frames go (stream ``capture``); a new one by default.
    """

    def __init__(self, name: str = "captures", snapshot_dir: str | Path | None = None,
                 frames: CaptureFrames | None = None):
        self.name = name
        self.parent = None
        self.snapshot_dir = None if snapshot_dir is None else Path(snapshot_dir)
        self.frames = frames if frames is not None else CaptureFrames()
        self._docs: list[tuple[str, dict]] = []
        self._index = 0
        self._reading: dict | None = None
        self._describe: dict | None = None

    def record(self, files: list[Path], slices: np.ndarray | None) -> None:
        """Record a capture: ``files`` complete, in time order (circular buffer first, if any),
        the last being the main file; ``slices`` the image at trigger time (or None)."""
        first = self.frames.get_index()
        rows = self.frames.add(files)
        main = files[-1]
        describe = {f"{self.name}_file": {"source": "FilePath/StreamFileName", "dtype": "string",
                                          "shape": []},
                    f"{self.name}_pre_counted": {"source": f"file:{main.name}", "dtype": "integer",
                                                 "shape": []},
                    f"{self.name}_first_row": {"source": "capture", "dtype": "integer", "shape": []},
                    f"{self.name}_rows": {"source": "capture", "dtype": "integer", "shape": []}}
        if slices is not None and self.snapshot_dir is not None:
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            snap = write_snapshot(self.snapshot_dir / f"{main.stem}-{uuid.uuid4().hex[:8]}.slices.h5", slices)
            shape = list(np.shape(slices))
            key = f"{self.name}_slices"
            describe[key] = {"source": f"file:{snap}", "dtype": "array", "shape": shape,
                             "dtype_numpy": np.dtype(np.float32).str, "external": "STREAM:"}
            self._docs += _asset(key, snap, SLICES_DATASET, 1, [1, *shape])
        if self._describe is not None and set(describe) != set(self._describe):
            raise CaptureError(f"capture {str(main)!r}: a run records slices with every capture or never")
        self._describe = self._describe or describe
        now = time.time()
        values = {"file": str(main), "pre_counted": rows - _frames(main), "first_row": first, "rows": rows}
        self._reading = {f"{self.name}_{k}": {"value": v, "timestamp": now} for k, v in values.items()}
        self._index += 1

    # --- bluesky protocols: Readable, WritesStreamAssets ---------------------------------------
    def describe(self) -> dict:
        if self._describe is None:
            raise CaptureError(f"{self.name}: no capture recorded yet")
        return dict(self._describe)

    def read(self) -> dict:
        if self._reading is None:
            raise CaptureError(f"{self.name}: no capture recorded yet")
        return dict(self._reading)

    def describe_configuration(self) -> dict:
        return {}

    def read_configuration(self) -> dict:
        return {}

    @property
    def hints(self) -> dict:
        return {"fields": []}

    def collect_asset_docs(self, index: int | None = None):
        docs, self._docs = self._docs, []
        yield from docs

    def get_index(self) -> int:
        return self._index


def _frames(path: Path) -> int:
    with h5py.File(path, "r", locking=False) as f:
        return int(f[DATA].shape[0])
