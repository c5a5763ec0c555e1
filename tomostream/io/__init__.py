"""Data on disk and in the catalog: Data Exchange files and the Bluesky catalog.

``open_catalog`` opens the container of runs (embedded Tiled server by default);
``write_dxfile`` / ``read_dxfile`` write and read capture files.
"""

from __future__ import annotations

from .catalog import broker_view, catalog_writer, close_catalog, open_catalog, replay_spool

__all__ = ["open_catalog", "broker_view", "catalog_writer", "close_catalog", "replay_spool", "write_dxfile",
           "read_dxfile"]


def __getattr__(name: str):
    if name in ("write_dxfile", "read_dxfile", "next_capture_path"):
        from . import dxfile

        return getattr(dxfile, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
