"""A simulated EPICS motor record that ophyd's ``EpicsMotor`` drives as it drives a real one.

A put to ``VAL`` starts a move: ``DMOV`` drops to 0 and ``MOVN`` rises to 1 at once, ``RBV``
(and ``DRBV``) then follow at ``VELO`` [EGU/s], a step every :data:`TICK` seconds, and at the
target ``MOVN`` goes back to 0 and ``DMOV`` to 1 (also for a move of length zero, as a real
record does); the put completes then. A put while moving retargets the move. ``STOP`` (or
``SPMG`` Stop) ends the move where it is and sets ``VAL`` to the position reached. ``HLM`` /
``LLM`` are the soft limits (also the control limits of ``VAL`` that ophyd checks); a target
beyond them is refused and ``LVIO`` set. ``EGU`` names the unit.

The position can be read from any thread (:attr:`MotorRecord.position`); the move runs in the
IOC's event loop.
"""

from __future__ import annotations

import asyncio
import math

from caproto import SkipWrite
from caproto.server import PVGroup, pvproperty

from ..errors import BadParameter

#: Seconds between readback updates of a moving motor.
TICK = 0.05


class MotorRecord(PVGroup):
    """One motor record named by its prefix (``2bmS1:m2``: ``2bmS1:m2.VAL``, ``.RBV``, ...).

    Parameters
    ----------
    prefix : str
        The record name.
    egu : str
        Engineering unit, e.g. ``"mm"``.
    velocity : float [EGU/s]
        Speed of a move (``VELO``).
    limits : (float, float) [EGU]
        Soft limits (``LLM``, ``HLM``).
    position : float [EGU]
        Where the motor stands at start.
    description : str
        ``DESC``.
    """

    motor = pvproperty(value=0.0, name="", record="motor", precision=4)

    def __init__(self, prefix: str, *, egu: str = "mm", velocity: float = 1.0,
                 limits: tuple[float, float] = (-10.0, 10.0), position: float = 0.0,
                 description: str = "", **kwargs):
        super().__init__(prefix, **kwargs)
        low, high = (float(v) for v in limits)
        if not (math.isfinite(velocity) and velocity > 0 and low < high and low <= position <= high):
            raise BadParameter(f"motor {prefix}: velocity={velocity} must be > 0 and "
                             f"{low} <= position={position} <= {high}")
        self.egu, self.velocity, self.limits = egu, float(velocity), (low, high)
        self.description = description
        #: Readback [EGU], safe to read from any thread.
        self.position = float(position)
        self._target: asyncio.Event | None = None
        self._goal = self.position
        self._moving = False
        self._stood: asyncio.Event | None = None

    @property
    def done(self) -> bool:
        """Whether the motor stands still (``DMOV`` = 1); safe to read from any thread."""
        return not self._moving and (self._target is None or not self._target.is_set())

    @motor.startup
    async def motor(self, instance, async_lib):
        fields = instance.field_inst
        low, high = self.limits
        await instance.write_metadata(lower_ctrl_limit=low, upper_ctrl_limit=high, units=self.egu)
        await instance.write(self.position, verify_value=False)
        for field, value in ((fields.engineering_units, self.egu), (fields.velocity, self.velocity),
                             (fields.max_velocity, self.velocity), (fields.user_low_limit, low),
                             (fields.user_high_limit, high), (fields.description, self.description),
                             (fields.done_moving_to_value, 1), (fields.motor_is_moving, 0)):
            await field.write(value, verify_value=False)
        await self._show(self.position)
        self._target, self._stood = asyncio.Event(), asyncio.Event()
        self._stood.set()
        while True:
            await self._target.wait()
            self._target.clear()
            await self._move(instance)

    @motor.putter
    async def motor(self, instance, value):
        fields = instance.field_inst
        low, high = fields.user_low_limit.value, fields.user_high_limit.value
        if low < high and not low <= value <= high:
            await fields.limit_violation.write(1, verify_value=False)
            self.log.warning("%s: %g is outside the limits %g..%g: not moved", self.prefix, value,
                             low, high)
            raise SkipWrite()
        await fields.limit_violation.write(0, verify_value=False)
        await fields.stop.write(0, verify_value=False)     # a STOP while standing still is over
        if self._target is None:            # not served yet
            return value
        self._goal, self._moving = float(value), True
        self._stood.clear()
        await instance.write(value, verify_value=False)
        await fields.done_moving_to_value.write(0, verify_value=False)
        self._target.set()
        await self._stood.wait()
        return instance.value

    async def _show(self, position: float) -> None:
        fields = self.motor.field_inst
        self.position = position
        await fields.user_readback_value.write(position, verify_value=False)
        await fields.dial_readback_value.write(position, verify_value=False)

    async def _move(self, instance) -> None:
        """Go towards ``VAL`` (which may change on the way) at ``VELO``; stop on ``STOP``."""
        fields = instance.field_inst
        await fields.motor_is_moving.write(1, verify_value=False)
        position = self.position
        while True:
            target = self._goal
            if fields.stop.value or fields.stop_pause_move_go.value == "Stop":
                await fields.stop.write(0, verify_value=False)
                self._goal = position
                self._target.clear()
                await instance.write(position, verify_value=False)
                break
            step = max(float(fields.velocity.value), 1e-9) * TICK
            if abs(target - position) <= step:
                position = target
                await self._show(position)
                if not self._target.is_set():
                    break
                self._target.clear()
                continue
            position += math.copysign(step, target - position)
            await fields.direction_of_travel.write(int(target > position), verify_value=False)
            await self._show(position)
            await asyncio.sleep(TICK)
        await fields.motor_is_moving.write(0, verify_value=False)
        self._moving = False
        await fields.done_moving_to_value.write(1, verify_value=False)
        self._stood.set()
