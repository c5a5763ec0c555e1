"""Record types and record behaviour shared by every IOC of tomostream."""

from __future__ import annotations

import math

from caproto.server.records import BoFields, register_record

NO_YES = ("No", "Yes")
DONE_ACQUIRE = ("Done", "Acquire")
STOPPED_RUNNING = ("Stopped", "Running")

#: Seconds a watchdog value of 1 lasts; an IOC decrements its Watchdog once per period.
WATCHDOG_PERIOD = 1.0
#: Value a live server writes to Watchdog on each heartbeat.
WATCHDOG_RESET = 5


@register_record
class BusyFields(BoFields):
    """Fields of a ``busy`` record (synApps): a ``bo`` whose put completes when the work is done."""

    _record_type = "busy"


async def follow_watchdog(server_running, value) -> float:
    """A write to ``Watchdog``: clamp it to >= 0 (NaN -> 0) and drive ``ServerRunning``.

    ``ServerRunning`` reads Running while the watchdog is above zero, so it drops to Stopped
    within ``WATCHDOG_RESET`` periods of the last heartbeat of a server that died.
    """
    value = max(float(value), 0.0) if math.isfinite(float(value)) else 0.0
    running = STOPPED_RUNNING[value > 0]
    if server_running.value != running:
        await server_running.write(running)
    return value


async def count_down(watchdog) -> None:
    """One watchdog period: decrement ``watchdog`` towards zero."""
    if watchdog.value > 0:
        await watchdog.write(watchdog.value - 1)
