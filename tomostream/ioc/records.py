"""Record types and record behaviour shared by every IOC of tomostream."""

from __future__ import annotations

import math

from caproto import CaprotoConversionError, ChannelType
from caproto.server import PvpropertyEnum, pvproperty
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


async def _put_watchdog(group, instance, value) -> float:
    return await follow_watchdog(group.ServerRunning, value)


async def _scan_watchdog(group, instance, async_lib) -> None:
    await count_down(instance)


def watchdog(doc: str) -> pvproperty:
    """A ``Watchdog`` calcout, decremented each :data:`WATCHDOG_PERIOD`, driving its group's
    ``ServerRunning`` (:func:`server_running`); ``doc`` says who sets it."""
    prop = pvproperty(value=0.0, record="calcout", doc=f"decremented each {WATCHDOG_PERIOD:g} s; {doc}")
    return prop.putter(_put_watchdog).scan(period=WATCHDOG_PERIOD)(_scan_watchdog)


def server_running() -> pvproperty:
    """A ``ServerRunning`` bi, Stopped / Running, driven by the group's :func:`watchdog`."""
    return pvproperty(value="Stopped", enum_strings=STOPPED_RUNNING, dtype=ChannelType.ENUM,
                      record="bi", read_only=True, doc="Running while Watchdog > 0")


def stringout(value: str, **kwargs) -> pvproperty:
    """A stringout record holding ``value`` (a 40-character DBR_STRING)."""
    return pvproperty(value=value, dtype=ChannelType.STRING, record="stringout", **kwargs)


class CheckedEnum(PvpropertyEnum):
    """An enum PV that answers a write of an undefined state index with a ReconStatus message.

    caproto refuses such an index while converting the request, before any putter runs.
    """

    async def write_from_dbr(self, data, data_type, metadata, *, flags=0):
        try:
            await super().write_from_dbr(data, data_type, metadata, flags=flags)
        except CaprotoConversionError:
            shown = data[0] if len(data) == 1 else list(data)
            await self.group.parent.report(
                f"{self.pvspec.name}={shown} is not one of "
                f"{[s for s in self.enum_strings if s]}: refused")
