"""Ending the use of devices without crashing the process."""

from __future__ import annotations

from ophyd import Device

from .pva_image import PvaImageSignal


def release(*devices: Device) -> None:
    """Stop the PV Access monitors of ``devices``; their Channel Access channels stay open.

    ``Device.destroy()`` disconnects every pyepics channel at once, while ophyd's dispatcher
    threads may still be reading those channels' metadata: libca then reads freed channels
    and the process dies (seen as a segmentation fault). Channels left open cost nothing
    until the process ends, and a device made again for the same prefix reuses them from
    pyepics' cache.
    """
    for device in devices:
        for walk in device.walk_signals(include_lazy=False):
            if isinstance(walk.item, PvaImageSignal):
                walk.item.stop()
