"""Runs kept on disk until the catalog holds them: one journal per run, replayed when needed.

:class:`CatalogWriter` appends every document of a run to ``<spool>/<uid>.jsonl`` as it is
emitted, then hands it to bluesky's ``TiledWriter``. Once the stop document is in the catalog
the journal is removed. It is kept, complete or not, when

- the catalog failed during the run (it is not tried again for that run: no retry storm
  mid-scan),
- there was no catalog at all (a session started while the catalog server was down),
- the process ended before the run closed (killed, a power cut, a queue server restarted
  mid-plan).

:func:`replay_spool` writes the kept runs into a catalog, closing a run that never closed with
a stop document (exit status ``fail``) and replacing what the catalog took of it. While a run
is being written its journal is locked (``flock``), so a replay from another session never
takes a run that is still open.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path

from ..errors import BadParameter

log = logging.getLogger(__name__)

#: Why a replayed run that never closed was closed.
UNCLOSED_REASON = ("the session writing this run ended before the run closed (process killed or "
                   "restarted); closed when replayed from the spool")


def _jsonable(value):
    """JSON form of the numpy values documents may hold."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _locked(file) -> bool:
    """Take the exclusive lock of an open journal; False when another writer holds it."""
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _JournaledRun:
    """Documents of one run: to its journal first, then to the catalog until the catalog fails.

    Parameters
    ----------
    primary : callable or None
        The catalog's writer; None: the run goes to the journal only.
    spool : Path or None
        Folder of the journals; None: no journal, catalog errors raise.
    """

    def __init__(self, primary, spool: Path | None):
        self.primary = primary
        self.spool = spool
        self.failed = primary is None
        self._file = None
        self._path: Path | None = None

    def _open(self, uid: str) -> None:
        self._path = self.spool / f"{uid}.jsonl"
        try:
            self._file = open(self._path, "a")
            _locked(self._file)
        except OSError as exc:
            self._journal_lost(exc)

    def _journal_lost(self, exc: OSError) -> None:
        log.error("run journal %s cannot be written (%s); this run now depends on the catalog alone",
                  self._path, exc)
        if self._file is not None:
            self._file.close()
        self._file = None

    def _append(self, name: str, doc: dict) -> None:
        try:
            self._file.write(json.dumps({"name": name, "doc": doc}, default=_jsonable) + "\n")
            self._file.flush()
        except OSError as exc:
            self._journal_lost(exc)

    def _close(self) -> None:
        if self._file is None:
            return
        if not self.failed:  # the catalog has the whole run
            self._path.unlink(missing_ok=True)
        self._file.close()  # releases the lock
        self._file = None

    def __call__(self, name: str, doc: dict) -> None:
        if self.spool is None:
            self.primary(name, doc)
            return
        if name == "start":
            self._open(doc["uid"])
            if self.primary is None:
                log.warning("no catalog: run %s kept in %s until replay_spool writes it into one",
                            doc["uid"], self._path)
        if self._file is not None:
            self._append(name, doc)
        if not self.failed:
            try:
                self.primary(name, doc)
            except Exception as exc:  # any failure of the catalog: the journal keeps the run
                if self._file is None:
                    raise
                log.warning("catalog write failed (%s: %s); run %s kept in %s", type(exc).__name__, exc,
                            self._path.stem, self._path)
                self.failed = True
        if name == "stop":
            self._close()


class CatalogWriter:
    """RunEngine callback recording runs into a Tiled catalog, journaled in ``spool``.

    Parameters
    ----------
    catalog : tiled container or None
        As returned by :func:`tomostream.io.catalog.open_catalog`; None (the catalog server
        did not answer) keeps every run in ``spool`` only.
    spool : path, optional
        Folder of the run journals (see the module's description); replay them with
        :func:`replay_spool`. None: no journal, catalog errors raise.
    batch_size : int
        Events gathered before one write; 1 writes each event as it comes.
    """

    def __init__(self, catalog, spool: str | os.PathLike | None = None, *, batch_size: int = 1):
        from event_model import RunRouter

        if catalog is None and spool is None:
            raise BadParameter("CatalogWriter needs a catalog, a spool folder, or both")
        self.catalog = catalog
        self.spool = None if spool is None else Path(spool)
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._router = RunRouter([self._factory])

    def _factory(self, name, doc):
        from bluesky.callbacks.tiled_writer import TiledWriter

        writer = None if self.catalog is None else TiledWriter(self.catalog, batch_size=self.batch_size)
        return [_JournaledRun(writer, self.spool)], []

    def __call__(self, name: str, doc: dict) -> None:
        self._router(name, doc)


def catalog_writer(catalog, spool: str | os.PathLike | None = None, *,
                   batch_size: int = 1) -> CatalogWriter:
    """A RunEngine callback recording runs into ``catalog``; see :class:`CatalogWriter`."""
    return CatalogWriter(catalog, spool, batch_size=batch_size)


def spooled_runs(spool: str | os.PathLike) -> list[Path]:
    """Journals of runs kept in ``spool`` (oldest first), open runs included."""
    folder = Path(spool)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def _complete(docs: list[dict]):
    """The documents of a kept run, closed by a stop document if it never came."""
    yield from docs
    if docs[-1]["name"] != "stop":
        start = docs[0]["doc"]
        times = [item["doc"].get("time", start["time"]) for item in docs]
        last = max(max(t) if isinstance(t, list) else t for t in times)   # pages hold lists
        counts: dict[str, int] = {}
        streams = {item["doc"]["uid"]: item["doc"].get("name") for item in docs
                   if item["name"] == "descriptor"}
        for item in docs:
            if item["name"] in ("event", "event_page"):  # the journal holds pages (RunRouter)
                stream = streams.get(item["doc"]["descriptor"])
                rows = len(item["doc"]["seq_num"]) if item["name"] == "event_page" else 1
                counts[stream] = counts.get(stream, 0) + rows
        yield {"name": "stop", "doc": {"uid": f"{start['uid']}-stop", "run_start": start["uid"],
                                       "time": last, "exit_status": "fail", "reason": UNCLOSED_REASON,
                                       "num_events": counts}}


def _read_journal(path: Path) -> list[dict]:
    """The documents of a journal; a last line cut short by a crash is left out."""
    docs = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("spool file %s: a line cut short was left out", path)
    return docs


def replay_spool(catalog, spool: str | os.PathLike) -> list[str]:
    """Write the runs kept in ``spool`` into ``catalog`` and remove their journals.

    A run the catalog took only in part (it failed mid-run, or the session ended) is replaced by
    the complete one; a run that never closed gets a stop document with exit status ``fail``
    and the reason. Runs still open in a live session (their journal locked) are left alone.

    Parameters
    ----------
    catalog : tiled container
        Destination, as returned by :func:`tomostream.io.catalog.open_catalog`.
    spool : path
        Folder given to :func:`catalog_writer`.

    Returns
    -------
    list of str
        uids of the runs written.
    """
    from bluesky.callbacks.tiled_writer import TiledWriter
    from tiled.queries import KeysFilter

    written = []
    for path in spooled_runs(spool):
        with open(path) as handle:
            if not _locked(handle):
                log.info("spool file %s belongs to a run still open; left in place", path)
                continue
            docs = _read_journal(path)
            if not docs or docs[0]["name"] != "start":
                log.warning("spool file %s does not begin with a start document; left in place", path)
                continue
            uid = docs[0]["doc"]["uid"]
            if len(catalog.search(KeysFilter(keys=[uid]))):   # taken in part: replaced
                catalog.delete_contents(uid, recursive=True, external_only=False)
            writer = TiledWriter(catalog, batch_size=1)
            for item in _complete(docs):
                writer(item["name"], item["doc"])
            path.unlink()
        written.append(uid)
    return written
