"""Letting go of ophyd devices safely."""

from __future__ import annotations

import threading

#: Longest wait [s] for ophyd's utility threads to finish what they are doing.
IDLE_TIMEOUT = 30.0


def destroy_devices(*devices, timeout: float = IDLE_TIMEOUT) -> None:
    """``destroy()`` ophyd devices or signals once ophyd's utility threads are idle.

    ophyd reads a new channel's metadata in a utility thread, and a connection callback that
    pyepics delivers twice starts a second read after the device already reports connected;
    destroying the device during that read makes libca crash the process. So every utility
    thread is first held (its tasks run in order, so the reads queued before are over), the
    devices are destroyed, and the threads are let go. After ``timeout`` [s] without idle
    threads the devices are destroyed anyway.
    """
    from ophyd._pyepics_shim import get_dispatcher

    dispatcher = get_dispatcher()
    threads = len(getattr(dispatcher, "_utility_threads", ())) if dispatcher is not None else 0
    release = threading.Event()
    arrived = threading.Barrier(threads + 1)

    def hold():
        try:
            arrived.wait(timeout)
        except threading.BrokenBarrierError:
            return
        release.wait(timeout)

    for _ in range(threads):
        dispatcher.schedule_utility_task(hold)
    try:
        if threads:
            arrived.wait(timeout)
    except threading.BrokenBarrierError:
        pass
    finally:
        try:
            for device in devices:
                device.destroy()
        finally:
            release.set()
