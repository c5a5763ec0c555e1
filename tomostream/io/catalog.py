"""The Bluesky catalog: where every run and every capture is recorded.

By default an embedded Tiled server (SQLite catalog, DuckDB/file storage) runs inside the
session and keeps everything in a data directory, so runs survive restarts. A facility Tiled
server (PostgreSQL behind it) is one URI away: ``open_catalog("https://tiled.example/api/v1",
api_key=...)``. Either way the object returned is the Tiled container of runs, with spec
``CatalogOfBlueskyRuns``, so ``databroker.Broker(catalog)`` gives the v1-style view.

Documents reach the catalog through bluesky's ``TiledWriter``; :func:`catalog_writer` builds
one whose runs fall back to a JSON-lines spool when the catalog is unreachable, and
:func:`replay_spool` writes spooled runs into a catalog afterwards, so no run silently
vanishes.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConnectionLost

log = logging.getLogger(__name__)

#: Name of the container of runs inside the Tiled server.
RUNS_KEY = "runs"
#: Spec databroker looks for on a container of Bluesky runs.
RUNS_SPEC = "CatalogOfBlueskyRuns"
#: Environment variable naming the default data directory.
DATA_DIR_ENV = "TOMOSTREAM_DATA_DIR"

_servers: dict[Path, object] = {}  # data directory -> running SimpleTiledServer
_clients: dict[Path, list] = {}  # data directory -> clients opened on its server
_servers_lock = threading.Lock()


def default_data_dir() -> Path:
    """Directory of the embedded catalog when none is given.

    ``$TOMOSTREAM_DATA_DIR`` if set, else ``~/.local/share/tomostream``.
    """
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return (Path.home() / ".local" / "share" / "tomostream").resolve()


def _subfolder(data_dir: str | os.PathLike | None, name: str) -> Path:
    """``<data_dir>/<name>`` (``data_dir`` default :func:`default_data_dir`), created."""
    folder = (Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def capture_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Folder for capture files beside an embedded catalog (``<data_dir>/captures``), created."""
    return _subfolder(data_dir, "captures")


def snapshot_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Folder for the slices snapshots of captures (``<data_dir>/snapshots``), created.

    The embedded server may read it; a facility server lists it as readable storage.
    """
    return _subfolder(data_dir, "snapshots")


def spool_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Folder where runs the catalog could not take are kept (``<data_dir>/spool``), created."""
    return _subfolder(data_dir, "spool")


def embedded_server(data_dir: str | os.PathLike | None = None,
                    readable_storage: Iterable[str | os.PathLike] = ()):
    """Start (or return the running) embedded Tiled server keeping its state in ``data_dir``.

    Parameters
    ----------
    data_dir : path, optional
        Directory of the SQLite catalog and the array storage; default :func:`default_data_dir`.
    readable_storage : iterable of path
        Extra folders whose files (captures) the server may read; ``<data_dir>/captures`` is
        always included.

    Returns
    -------
    tiled.server.SimpleTiledServer
    """
    from tiled.server import SimpleTiledServer

    root = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    root.mkdir(parents=True, exist_ok=True)
    with _servers_lock:
        server = _servers.get(root)
        if server is not None:
            return server
        readable = [str(capture_dir(root)), str(snapshot_dir(root))] + [str(Path(p).expanduser().resolve())
                                                for p in readable_storage]
        server = SimpleTiledServer(directory=root, readable_storage=readable)
        _servers[root] = server
        log.info("embedded Tiled server for %s at %s", root, server.uri.split("?")[0])
        return server


def close_catalog(data_dir: str | os.PathLike | None = None) -> None:
    """Stop the embedded Tiled server of ``data_dir`` (every one if ``data_dir`` is None).

    The data stay on disk; a later :func:`open_catalog` on the same directory sees them.
    """
    with _servers_lock:
        if data_dir is None:
            roots = list(_servers)
        else:
            roots = [Path(data_dir).expanduser().resolve()]
        for root in roots:
            for client in _clients.pop(root, []):
                client.context.close()
            server = _servers.pop(root, None)
            if server is not None:
                server.close()


def at_shutdown(func) -> None:
    """Call ``func()`` when the interpreter shuts down, before it waits for non-daemon threads.

    The embedded Tiled server runs in a non-daemon thread: a plain ``atexit`` hook would only
    run after that thread ended, i.e. never.
    """
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError("threading has no _register_atexit")
        register(func)
    except RuntimeError:  # no hook in this Python, or the interpreter is already shutting down
        atexit.register(func)


at_shutdown(close_catalog)


def open_catalog(uri: str | None = None, data_dir: str | os.PathLike | None = None,
                 api_key: str | None = None, *,
                 readable_storage: Iterable[str | os.PathLike] = ()):
    """Open the container of Bluesky runs.

    Parameters
    ----------
    uri : str, optional
        Tiled server, e.g. ``"http://tiled.beamline:8000/api/v1"``. None starts (or reuses) an
        embedded server whose catalog and storage persist in ``data_dir``.
    data_dir : path, optional
        Directory of the embedded catalog; ignored when ``uri`` is given.
    api_key : str, optional
        API key of the Tiled server at ``uri``.
    readable_storage : iterable of path
        Extra capture folders the embedded server may read (``<data_dir>/captures`` always is).
        A real server is configured on its side.

    Returns
    -------
    tiled.client.container.Container
        The container ``runs`` (spec ``CatalogOfBlueskyRuns``), created if missing. Subscribe
        ``catalog_writer(catalog)`` to a RunEngine to record into it; index it by run uid, scan
        id or position (``catalog.values().last()``).

    Raises
    ------
    ConnectionLost
        If the server at ``uri`` does not answer.
    """
    from tiled.client import from_uri

    root = None
    if uri is None:
        server = embedded_server(data_dir, readable_storage)
        uri, api_key, root = server.uri, None, Path(server.directory)
    try:
        client = from_uri(uri, api_key=api_key) if api_key else from_uri(uri)
    except Exception as exc:  # httpx/connect errors of every kind mean "not reachable"
        raise ConnectionLost(f"Tiled server {uri.split('?')[0]!r} did not answer: {exc}") from exc
    if root is not None:
        with _servers_lock:
            _clients.setdefault(root, []).append(client)
    if RUNS_KEY not in client:
        client.create_container(RUNS_KEY, specs=[RUNS_SPEC])
    return client[RUNS_KEY]


def broker_view(catalog):
    """databroker's v1 ``Broker`` on ``catalog``, for users of ``db[-1].table()`` habits.

    ``databroker.Broker(catalog)`` would switch every Tiled client of the process to the
    legacy (v2) run layout (bluesky-tiled-plugins edits a mapping its clients share); this
    view gets a private copy, so ``catalog`` and later :func:`open_catalog` clients keep
    reading runs as ``run["primary"]["det"]``.

    Examples
    --------
    >>> db = broker_view(open_catalog())      # doctest: +SKIP
    >>> db[-1].table()                         # doctest: +SKIP
    """
    from bluesky_tiled_plugins.clients.bluesky_run import BlueskyRunV2
    from bluesky_tiled_plugins.clients.catalog_of_bluesky_runs import CatalogOfBlueskyRuns
    from databroker import Broker
    from tiled.utils import OneShotCachedMap

    shared = catalog.structure_clients
    private = OneShotCachedMap({spec: (lambda spec=spec: shared[spec]) for spec in shared})
    private.set("BlueskyRun", lambda: BlueskyRunV2)
    # .v2 of the private catalog may edit ``private`` again, which no other client sees
    view = CatalogOfBlueskyRuns(catalog.context, item=catalog.item, structure_clients=private)
    return Broker(view)


class _SpooledRun:
    """Documents of one run: to the catalog, and to a JSON-lines file once the catalog fails.

    After the first failure every document of the run, earlier ones included, goes to the
    spool file and the catalog is not tried again for this run (no retry storm mid-scan).
    """

    def __init__(self, primary, spool: Path | None):
        self.primary = primary
        self.spool = spool
        self.failed = False
        self._buffer: list[tuple[str, dict]] = []
        self._path: Path | None = None

    def _append(self, docs) -> None:
        with open(self._path, "a") as file:
            for name, doc in docs:
                file.write(json.dumps({"name": name, "doc": doc}, default=_jsonable) + "\n")

    def __call__(self, name: str, doc: dict) -> None:
        if self.spool is None:
            self.primary(name, doc)
            return
        if name == "start":
            self._path = self.spool / f"{doc['uid']}.jsonl"
        if self.failed:
            self._append([(name, doc)])
            return
        self._buffer.append((name, doc))
        try:
            self.primary(name, doc)
        except Exception as exc:  # any failure of the catalog: keep the run in the spool
            log.warning("catalog write failed (%s: %s); run %s spooled to %s", type(exc).__name__,
                        exc, self._path.stem if self._path else "?", self.spool)
            self.failed = True
            self._append(self._buffer)
            self._buffer.clear()
        if name == "stop":
            self._buffer.clear()


def _jsonable(value):
    """JSON form of the numpy values documents may hold."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class CatalogWriter:
    """RunEngine callback recording runs into a Tiled catalog, spooling those it cannot take.

    Parameters
    ----------
    catalog : tiled container
        As returned by :func:`open_catalog`.
    spool : path, optional
        Folder where every document of a run is written as JSON lines if the catalog fails
        during that run (replay them with :func:`replay_spool`). None: no spool, errors raise.
    batch_size : int
        Events gathered before one write; 1 writes each event as it comes.
    """

    def __init__(self, catalog, spool: str | os.PathLike | None = None, *, batch_size: int = 1):
        from event_model import RunRouter

        self.catalog = catalog
        self.spool = None if spool is None else Path(spool)
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self._router = RunRouter([self._factory])

    def _factory(self, name, doc):
        from bluesky.callbacks.tiled_writer import TiledWriter

        writer = TiledWriter(self.catalog, batch_size=self.batch_size)
        return [_SpooledRun(writer, self.spool)], []

    def __call__(self, name: str, doc: dict) -> None:
        self._router(name, doc)


def catalog_writer(catalog, spool: str | os.PathLike | None = None, *,
                   batch_size: int = 1) -> CatalogWriter:
    """A RunEngine callback recording runs into ``catalog``; see :class:`CatalogWriter`."""
    return CatalogWriter(catalog, spool, batch_size=batch_size)


def spooled_runs(spool: str | os.PathLike) -> list[Path]:
    """JSON-lines files of runs waiting in ``spool`` (oldest first)."""
    folder = Path(spool)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)


def _complete(docs: list[dict]):
    """The documents of a spooled run, closed by a stop document if it never came."""
    yield from docs
    if docs[-1]["name"] != "stop":
        start = docs[0]["doc"]
        last = max(item["doc"].get("time", start["time"]) for item in docs)
        yield {"name": "stop", "doc": {"uid": f"{start['uid']}-stop", "run_start": start["uid"],
                                       "time": last, "exit_status": "fail",
                                       "reason": "the session ended before the run closed"}}


def replay_spool(catalog, spool: str | os.PathLike) -> list[str]:
    """Write the runs kept in ``spool`` into ``catalog`` and remove their files.

    A run the catalog took only in part (it failed mid-run) is replaced by the complete one.

    Parameters
    ----------
    catalog : tiled container
        Destination, as returned by :func:`open_catalog`.
    spool : path
        Folder given to :func:`catalog_writer`.

    Returns
    -------
    list of str
        uids of the runs written.
    """
    from bluesky.callbacks.tiled_writer import TiledWriter

    written = []
    for path in spooled_runs(spool):
        docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        docs = list(_complete(docs))
        if not docs or docs[0]["name"] != "start":
            log.warning("spool file %s does not begin with a start document; left in place", path)
            continue
        uid = docs[0]["doc"]["uid"]
        if uid in catalog:
            catalog.delete_contents(uid, recursive=True, external_only=False)
        writer = TiledWriter(catalog, batch_size=1)
        for item in docs:
            writer(item["name"], item["doc"])
        path.unlink()
        written.append(uid)
    return written
