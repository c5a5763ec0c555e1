"""Captures as events of a Bluesky stream, their data referenced in the capture files.

:class:`CaptureRecorder` is read inside a ``capture`` event after each capture: it reports the
file name and the number of pre-trigger frames as event data, and hands the RunEngine a
StreamResource/StreamDatum pair per capture for the projections (``/exchange/data`` of the
DXfile) and for the snapshot of the slices at trigger time (a small HDF5 file beside the
capture), so a Tiled catalog serves both as arrays.
"""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import numpy as np
from event_model import compose_stream_resource

from ..errors import CaptureError

#: Dataset of the projections in a DXfile.
PROJECTIONS_DATASET = "/exchange/data"
#: Dataset of the slices snapshot in its HDF5 file.
SLICES_DATASET = "/slices"
HDF5 = "application/x-hdf5"


def write_snapshot(path: Path, image: np.ndarray) -> Path:
    """Write the slices at trigger time as ``/slices`` of shape (1, rows, 3n) into ``path``."""
    with h5py.File(path, "x") as f:
        f.create_dataset(SLICES_DATASET.lstrip("/"), data=np.asarray(image, np.float32)[None])
    return path


class CaptureRecorder:
    """The latest capture, readable in an event with its data as external stream assets.

    Parameters
    ----------
    name : str
        Prefix of the data keys: ``<name>_projections``, ``<name>_slices``, ``<name>_file``,
        ``<name>_pre_counted``.

    Notes
    -----
    Call :meth:`record` after each capture and before reading this object. The projections'
    data key has the shape ``[frames, rows, columns]`` of the first capture; captures of a
    run therefore have one size (``pre_count + num_capture``).
    """

    def __init__(self, name: str = "capture"):
        self.name = name
        self.parent = None
        self._docs: list[tuple[str, dict]] = []
        self._index = 0
        self._reading: dict | None = None
        self._describe: dict | None = None

    def record(self, file: str | Path, slices: np.ndarray | None, pre_counted: int = 0) -> None:
        """Register a capture file and the slices at trigger time.

        Raises
        ------
        CaptureError
            If the file has no ``/exchange/data`` or its frame count differs from earlier
            captures of this run.
        """
        path = Path(file).resolve()
        try:
            with h5py.File(path, "r") as f:
                data = f[PROJECTIONS_DATASET]
                shape, dtype = list(data.shape), data.dtype
        except (OSError, KeyError) as exc:
            raise CaptureError(f"capture file {str(path)!r} has no readable {PROJECTIONS_DATASET}: "
                               f"{exc}") from exc
        keys = {f"{self.name}_projections": (path, PROJECTIONS_DATASET, shape, dtype)}
        if slices is not None:
            snap = write_snapshot(path.with_suffix(".slices.h5"), slices)
            keys[f"{self.name}_slices"] = (snap, SLICES_DATASET, list(np.shape(slices)),
                                           np.dtype(np.float32))
        describe = {key: {"source": f"file:{file}", "dtype": "array", "dtype_numpy": dt.str,
                          "shape": shp, "external": "STREAM:"}
                    for key, (file, _, shp, dt) in keys.items()}
        describe[f"{self.name}_file"] = {"source": "StreamFileName", "dtype": "string", "shape": []}
        describe[f"{self.name}_pre_counted"] = {"source": "StreamPreCounted", "dtype": "integer",
                                                "shape": []}
        if self._describe is not None:
            previous = self._describe[f"{self.name}_projections"]["shape"]
            if previous != shape or set(describe) != set(self._describe):
                raise CaptureError(f"capture {str(path)!r} holds frames {shape}, earlier captures "
                                   f"of this run {previous}: set StreamPreCount/StreamNumCapture "
                                   "once per run")
        self._describe = self._describe or describe
        for key, (file, dataset, shp, _) in keys.items():
            # one event holds a whole dataset: stacked, a key reads back as (captures, *shape),
            # as long as the stream's other keys, chunked by frame
            chunks = [1, *[1] * (len(shp) - 2), *shp[-2:]]
            bundle = compose_stream_resource(mimetype=HDF5, uri=f"file://localhost{file}", data_key=key,
                                             parameters={"dataset": dataset, "join_method": "stack",
                                                         "chunk_shape": chunks})
            self._docs.append(("stream_resource", bundle.stream_resource_doc))
            self._docs.append(("stream_datum", bundle.compose_stream_datum(indices={"start": 0, "stop": 1})))
        now = time.time()
        self._reading = {f"{self.name}_file": {"value": str(path), "timestamp": now},
                         f"{self.name}_pre_counted": {"value": int(pre_counted), "timestamp": now}}
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
