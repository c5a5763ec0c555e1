"""Data on disk and in the catalog: Data Exchange files and the Bluesky catalog.

``open_catalog`` opens the container of runs (embedded Tiled server by default);
``read_capture`` reads a TomoScan capture (its files, or the last capture of a run) as one
scan; ``write_dxfile`` / ``read_dxfile`` write and read single Data Exchange files.
"""

from __future__ import annotations

from .catalog import broker_view, catalog_writer, close_catalog, open_catalog, replay_spool

__all__ = ["open_catalog", "broker_view", "catalog_writer", "close_catalog", "replay_spool", "write_dxfile",
           "read_dxfile", "read_capture", "Capture"]


def __getattr__(name: str):
    if name in ("write_dxfile", "read_dxfile", "next_capture_path"):
        from . import dxfile

        return getattr(dxfile, name)
    if name in ("read_capture", "Capture"):
        from . import capture

        return getattr(capture, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
