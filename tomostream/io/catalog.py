"""The Bluesky catalog: where every run and every capture is recorded.

By default an embedded Tiled server (SQLite catalog, DuckDB/file storage) runs inside the
session and keeps everything in a data directory, so runs survive restarts. A facility Tiled
server (PostgreSQL behind it) is one URI away: ``open_catalog("https://tiled.example/api/v1",
api_key=...)``. Either way the object returned is the Tiled container of runs, with spec
``CatalogOfBlueskyRuns``, so ``databroker.Broker(catalog)`` gives the v1-style view.

Documents reach the catalog through bluesky's ``TiledWriter``; :func:`catalog_writer` builds
one that journals each run until the catalog holds it, and :func:`replay_spool` writes kept
runs into a catalog afterwards, so no run silently vanishes (:mod:`tomostream.io.spool`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from ..errors import AccessDenied, ConnectionLost
from .spool import CatalogWriter, catalog_writer, replay_spool, spooled_runs

__all__ = ["open_catalog", "close_catalog", "broker_view", "embedded_server", "default_data_dir",
           "capture_dir", "snapshot_dir", "spool_dir", "at_shutdown", "CatalogWriter", "catalog_writer",
           "replay_spool", "spooled_runs"]

log = logging.getLogger(__name__)

#: Name of the container of runs inside the Tiled server.
RUNS_KEY = "runs"
#: Spec databroker looks for on a container of Bluesky runs.
RUNS_SPEC = "CatalogOfBlueskyRuns"
#: Environment variable naming the default data directory.
DATA_DIR_ENV = "TOMOSTREAM_DATA_DIR"
#: Seconds a catalog server has to answer at all before it is called down [s].
CONNECT_TIMEOUT = 5.0

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
        If the server at ``uri`` does not answer (within :data:`CONNECT_TIMEOUT`), or answers
        with an error; the message names the URI and what to check.
    AccessDenied
        If the server refuses the API key, or needs one and none was given.
    """
    root = None
    if uri is None:
        server = embedded_server(data_dir, readable_storage)
        uri, api_key, root = server.uri, None, Path(server.directory)
    client = _connect(uri, api_key)
    if root is not None:
        with _servers_lock:
            _clients.setdefault(root, []).append(client)
    if RUNS_KEY not in client:
        client.create_container(RUNS_KEY, specs=[RUNS_SPEC])
    return client[RUNS_KEY]


def _connect(uri: str, api_key: str | None):
    """Tiled client of the server at ``uri``; errors name the server and what to check."""
    import httpx
    from tiled.client.constructors import from_context
    from tiled.client.context import Context
    from tiled.client.utils import ClientError

    where = uri.split("?")[0]
    key_hint = ("the key this session gives (TILED_API_KEY, or api_key in the [catalog] section of "
                "its configuration) must be the server's single_user_api_key (TILED_API_KEY in the "
                "catalog server's environment)")
    try:
        # no server at all: say so at once (the client would retry for tens of seconds)
        httpx.get(where, timeout=CONNECT_TIMEOUT)
        context, path = Context.from_any_uri(uri, api_key=api_key or None)
        try:
            return from_context(context, node_path_parts=path)
        except Exception:  # leave no connection open behind an error
            context.close()
            raise
    except ClientError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AccessDenied(f"the catalog server {where!r} refused the API key ({exc}): "
                               f"{key_hint}") from exc
        raise ConnectionLost(f"the catalog server {where!r} answered with an error ({exc}): check "
                             "the URI (it ends in /api/v1) and the server's log") from exc
    except httpx.HTTPError as exc:
        raise ConnectionLost(f"the catalog server {where!r} did not answer ({type(exc).__name__}: {exc}): "
                             "check that it runs (systemctl status tomostream-catalog on its machine), "
                             "that this machine reaches it (host, port, firewall) and the URI ([catalog] "
                             "uri of the session's configuration)") from exc
    except RuntimeError as exc:
        if "API key" not in str(exc):
            raise
        raise AccessDenied(f"the catalog server {where!r} needs an API key and none was given: "
                           f"{key_hint}") from exc


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
