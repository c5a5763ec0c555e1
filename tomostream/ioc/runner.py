"""Run a caproto PV database in a background thread, on a chosen port, and stop it cleanly."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence

from ..errors import TomostreamTimeout
from .access import ClientAddressContext, WriteAllowList, restrict_writes, server_interfaces

log = logging.getLogger(__name__)


class _UnheardBeacons(logging.Filter):
    """Keep caproto's "Failed to send beacon" errors out of the logs.

    A beacon bounces when no CA repeater listens on the beacon port (the usual case on a
    workstation or a loopback-only demo). Clients still find the server by searching; the
    bounce is logged at debug level instead of as an error with a traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Failed to send beacon"):
            return True
        log.debug("CA beacons are not delivered (no repeater listening): %s", record.getMessage())
        return False


logging.getLogger("caproto.ctx").addFilter(_UnheardBeacons())


class IocThread:
    """A caproto asyncio server running in a daemon thread with its own event loop.

    Several can run in one process, each on its own CA search port (see
    :mod:`tomostream.epics_env`). ``start()`` returns once the server is listening;
    ``stop()`` cancels it, closes its clients' connections and frees its sockets.

    Parameters
    ----------
    pvdb : mapping
        caproto PV database (``PVGroup.pvdb``).
    port : int
        Channel Access search port (UDP) and first TCP port tried; 0 = EPICS_CA_SERVER_PORT.
    interfaces : sequence of str, optional
        Addresses to bind; by default ``EPICS_CAS_INTF_ADDR_LIST``, else loopback only.
    name : str
        Thread name, for logs.
    write_hosts : sequence of str, optional
        Hosts (names or IP addresses) that may write the PVs; everyone may read. None: any
        host may write. See :mod:`tomostream.ioc.access`.

    Attributes
    ----------
    write_access : WriteAllowList or None
        The write allow-list in force.
    """

    def __init__(self, pvdb: Mapping, port: int = 0, interfaces: Sequence[str] | None = None,
                 name: str = "ioc", *, write_hosts: Sequence[str] | None = None):
        self.pvdb = pvdb
        self.port = port
        self.interfaces = server_interfaces(interfaces)
        self.name = name
        self.write_access: WriteAllowList | None = (
            restrict_writes(pvdb, write_hosts) if write_hosts is not None else None)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._task: asyncio.Task | None = None
        self._context: ClientAddressContext | None = None
        self._error: BaseException | None = None

    def start(self, timeout: float = 10.0) -> IocThread:
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TomostreamTimeout(f"IOC {self.name!r} did not start within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to start() or logged
            self._error = exc
            log.exception("IOC %s stopped with an error", self.name)
        finally:
            self._ready.set()
            self._cancel_leftover_tasks()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def _cancel_leftover_tasks(self, timeout: float = 2.0) -> None:
        """Cancel tasks caproto leaves behind (circuit queues), so none is destroyed pending."""
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            self.loop.run_until_complete(asyncio.wait(pending, timeout=timeout))

    async def _serve(self) -> None:
        ctx = self._context = ClientAddressContext(self.pvdb, self.interfaces)
        if self.port:
            ctx.ca_server_port = self.port

        async def started(async_lib):
            self._ready.set()

        self._task = asyncio.current_task()
        try:
            await ctx.run(startup_hook=started)
        finally:
            # caproto leaves still-connected clients' circuits open when cancelled; their
            # transports would then be collected after the loop closed (ResourceWarnings).
            for circuit in list(ctx.circuits):
                circuit.client.close()
            for _ in range(3):  # let the transports finish closing
                await asyncio.sleep(0)

    def call_soon(self, callback, *args) -> None:
        """Run ``callback(*args)`` in the IOC's event loop (thread-safe)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(callback, *args)

    def run_coroutine(self, coro, timeout: float | None = 5.0):
        """Run a coroutine in the IOC's loop from another thread and return its result."""
        if self.loop is None or self.loop.is_closed() or not self.running:
            coro.close()  # never scheduled: close it rather than leave it un-awaited
            raise RuntimeError(f"IOC {self.name!r} is not running")
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:
            coro.close()
            raise
        return fut.result(timeout)

    @property
    def tcp_port(self) -> int | None:
        """TCP port the server accepts circuits on (None before :meth:`start`)."""
        return None if self._context is None else self._context.port

    @property
    def client_count(self) -> int:
        """Channel Access clients (circuits) connected now."""
        return 0 if self._context is None else len(self._context.circuits)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        if self.loop is not None and self._task is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> IocThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
