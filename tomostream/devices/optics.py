"""The optical zoom of APS 2-BM as ophyd devices: the sample stages and the mctoptics IOC.

The TomoStream IOC names them (``SampleTomo0degPVName``, ``SampleTomo90degPVName``,
``SampleYPVName``, ``MctOpticsPVPrefix``); :func:`zoom_devices` builds the devices from those
names and fails with a message naming the PV whose value points at nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from ophyd import Component as Cpt
from ophyd import Device, EpicsMotor, EpicsSignal, EpicsSignalRO
from ophyd import FormattedComponent as FCpt
from ophyd.status import DeviceStatus, SubscriptionStatus

from ..errors import BadParameter, ConnectionLost
from .lifecycle import destroy_devices

#: MCTStatus of an mctoptics IOC with no lens change under way.
OPTICS_IDLE = "Done"
#: Micrometres per unit of the motor EGUs the stages may use (the one place lengths convert).
UM_PER_UNIT: Mapping[str, float] = {"mm": 1.0e3, "um": 1.0, "µm": 1.0, "micron": 1.0,
                                    "microns": 1.0, "nm": 1.0e-3, "m": 1.0e6}


def um_per_unit(egu: str, motor: str) -> float:
    """Micrometres in one ``egu`` of ``motor`` (a motor record's engineering unit).

    Raises
    ------
    BadParameter
        An EGU that is not a length this table knows.
    """
    try:
        return UM_PER_UNIT[egu.strip().lower()]
    except KeyError:
        raise BadParameter(f"{motor}.EGU={egu!r} is not a length unit of {sorted(UM_PER_UNIT)}: "
                           "cannot convert pixels to stage moves") from None


class SampleStages(Device):
    """The three sample stages the optical zoom moves (motor records named in full).

    Parameters
    ----------
    tomo0deg, tomo90deg : str
        Motor records of the stages on the rotation stage that move the sample along the
        beam-normal direction at 0 and at 90 degrees.
    sample_y : str
        Motor record of the vertical stage.
    name : str
    """

    tomo0deg = FCpt(EpicsMotor, "{tomo0deg_pv}", kind="hinted")
    tomo90deg = FCpt(EpicsMotor, "{tomo90deg_pv}", kind="hinted")
    sample_y = FCpt(EpicsMotor, "{sample_y_pv}", kind="hinted")

    def __init__(self, prefix: str = "", *, tomo0deg: str, tomo90deg: str, sample_y: str, **kwargs):
        self.tomo0deg_pv, self.tomo90deg_pv, self.sample_y_pv = tomo0deg, tomo90deg, sample_y
        super().__init__(prefix, **kwargs)


class Optics(Device):
    """The mctoptics IOC: the lens in place and the pixel size at the sample.

    ``set(lens)`` selects a lens by name (one of :attr:`lens_names`), after any change under
    way has ended (mctoptics refuses a change while ``MCTStatus`` is not ``Done``), and
    completes when the IOC says the change is over: ``MCTStatus`` has left ``Done``
    (``Moving to lens: ...``, ``Lens selected: ...``) and come back to it. Each wait fails after
    ``settle_timeout`` seconds.

    Parameters
    ----------
    prefix : str
        e.g. ``"2bm:MCTOptics:"``.
    name : str
    settle_timeout : float [s]
        Longest a lens change may take.
    """

    # --- lens selection -----------------------------------------------------------------------
    lens_select = Cpt(EpicsSignal, "LensSelect", string=True, kind="hinted")
    camera_objective = Cpt(EpicsSignalRO, "CameraObjective", string=True, kind="normal")
    # --- pixel size ---------------------------------------------------------------------------
    image_pixel_size = Cpt(EpicsSignalRO, "ImagePixelSize", kind="normal")  # [microns]
    detector_pixel_size = Cpt(EpicsSignalRO, "DetectorPixelSize", kind="config")  # [microns]
    # --- status -------------------------------------------------------------------------------
    mct_status = Cpt(EpicsSignalRO, "MCTStatus", string=True, auto_monitor=True, kind="omitted")
    lens_motor_pv_name = Cpt(EpicsSignalRO, "LensMotorPVName", string=True, kind="config")

    def __init__(self, prefix: str = "", *, settle_timeout: float = 120.0, **kwargs):
        super().__init__(prefix, **kwargs)
        self.settle_timeout = float(settle_timeout)

    @property
    def lens_names(self) -> tuple[str, ...]:
        """The lenses LensSelect offers, by index."""
        return tuple(self.lens_select.enum_strs or ())

    def set(self, lens: str) -> DeviceStatus:
        """Select ``lens`` once no other change is under way; the status completes when the
        optics IOC reads Done again after this change."""
        if lens not in self.lens_names:
            raise BadParameter(f"lens={lens!r} is not one of {self.lens_names} "
                               f"({self.lens_select.pvname})")
        status = DeviceStatus(self, timeout=self.settle_timeout)
        threading.Thread(target=self._select, args=(lens, status), daemon=True,
                         name=f"{self.name} lens change").start()
        return status

    def _select(self, lens: str, status: DeviceStatus) -> None:
        seen: list[str] = []

        def over(value=None, **kwargs) -> bool:
            if value != OPTICS_IDLE:
                seen.append(value)
            return value == OPTICS_IDLE and bool(seen)

        try:
            if self.mct_status.get(use_monitor=False) != OPTICS_IDLE:   # mctoptics refuses a
                SubscriptionStatus(self.mct_status,                     # change during another
                                   lambda value=None, **kw: value == OPTICS_IDLE).wait(self.settle_timeout)
            change = SubscriptionStatus(self.mct_status, over, run=False)
            self.lens_select.put(lens)
            change.wait(self.settle_timeout)
        except Exception as exc:     # handed to whoever waits on the status
            if not status.done:
                status.set_exception(exc)
            return
        if not status.done:
            status.set_finished()


def connect(device: Device, names: Mapping[str, tuple[str, str]], timeout: float) -> Device:
    """Wait for ``device`` to connect; fail naming the name PV of each part that did not.

    Parameters
    ----------
    device : Device
    names : mapping
        ``{component attribute: (name PV, its value)}`` of the parts to blame.
    timeout : float [s]

    Raises
    ------
    ConnectionLost
        When a part does not answer within ``timeout``.
    """
    try:
        device.wait_for_connection(timeout=timeout)
    except TimeoutError:
        dead = list(dict.fromkeys(f"{pv}={value!r}" for attr, (pv, value) in names.items()
                                  if not getattr(device, attr).connected))
        destroy_devices(device)
        raise ConnectionLost(f"{', '.join(dead)}: nothing answers there within {timeout:g} s "
                             "(check the TomoStream name PVs)") from None
    return device


def field_size(channel: str, timeout: float = 5.0) -> tuple[int, int]:
    """Width and height [pixels] of the averaged dark or flat field served on PVA ``channel``
    (the size of the frames the stream server reconstructs, binning included).

    Raises
    ------
    ConnectionLost
        When the channel does not answer within ``timeout`` [s].
    """
    import pvaccess as pva

    try:
        ch = pva.Channel(channel, pva.PVA)
        ch.setTimeout(float(timeout))
        pv = ch.get("field(sizex,sizey)")
        return int(pv["sizex"]), int(pv["sizey"])
    except pva.PvaException as exc:
        raise ConnectionLost(f"dark field channel {channel!r} did not answer within {timeout:g} s: "
                             f"{exc}") from None
