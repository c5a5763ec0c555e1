"""Fixtures for the simulated beamline: a running SimBeamline on loopback and real clients.

CA through caproto's threading client, PVA through p4p (an independent implementation of the
protocol the simulator serves with pvapy).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from caproto.threading.client import Context as CaContext
from helpers import stopped_after, wait_until
from p4p.client.thread import Context as PvaContext

from tomostream.sim import SimBeamline
from tomostream.sim.stages import StageOptions

REQUEST = "record[queueSize=1000]field()"


class Ca:
    """Small helper around a caproto threading client for one PV prefix."""

    def __init__(self, ctx: CaContext, prefix: str):
        self.ctx, self.prefix, self._pvs = ctx, prefix, {}

    def pv(self, suffix: str):
        if suffix not in self._pvs:
            (pv,) = self.ctx.get_pvs(self.prefix + suffix, timeout=5)
            pv.wait_for_connection(timeout=10)
            self._pvs[suffix] = pv
        return self._pvs[suffix]

    def get(self, suffix: str):
        """Value of ``prefix + suffix``: enum as its string, text as str, numbers as numbers."""
        pv = self.pv(suffix)
        reading = pv.read(data_type="control" if not suffix.endswith(".RTYP") else None)
        data = reading.data
        strings = getattr(reading.metadata, "enum_strings", None)
        if strings:
            return strings[int(data[0])].decode()
        if not isinstance(data, np.ndarray):           # DBR_STRING
            return data[0].decode()
        if data.dtype == np.uint8 and pv.channel.native_data_type == 4:   # waveform of char
            return bytes(data).split(b"\0")[0].decode()
        return data[0] if data.size == 1 else data

    def put(self, suffix: str, value, wait: bool = True, timeout: float = 30.0):
        native = self.pv(suffix).channel.native_data_type
        if isinstance(value, str) and native == 4:                    # waveform of char
            value = list(value.encode()) + [0]
        elif isinstance(value, str) and native == 3:                  # enum: write its index
            value = [self.enum_strings(suffix).index(value)]
        elif isinstance(value, str):
            value = [value]
        elif np.isscalar(value):
            value = [value]
        return self.pv(suffix).write(value, wait=wait, timeout=timeout)

    def enum_strings(self, suffix: str) -> tuple[str, ...]:
        return tuple(s.decode() for s in self.pv(suffix).read(data_type="control").metadata.enum_strings)


class ImageMonitor:
    """Collects every frame of an NTNDArray channel through p4p: (uniqueId, array, timestamp)."""

    def __init__(self, ctx: PvaContext, channel: str):
        self.frames: list[tuple[int, np.ndarray, float]] = []
        self._lock = threading.Lock()
        self._sub = ctx.monitor(channel, self._cb, request=REQUEST)

    def _cb(self, value):
        if isinstance(value, Exception):
            return
        dims = value.dimension            # areaDetector order: [0] = width, [1] = height
        array = np.array(value.value).reshape(dims[1].size, dims[0].size)
        ts = value.timeStamp
        with self._lock:
            self.frames.append((int(value.uniqueId), array, ts.secondsPastEpoch + 1e-9 * ts.nanoseconds))

    def snapshot(self):
        with self._lock:
            return list(self.frames)

    def close(self):
        self._sub.close()


class FieldMonitor:
    """Latest value and update count of a dark/flat/theta structure channel through p4p."""

    def __init__(self, ctx: PvaContext, channel: str):
        self.values: list = []
        self._sub = ctx.monitor(channel, self._cb)

    def _cb(self, value):
        if isinstance(value, Exception):
            return
        arr = np.asarray(value.value, dtype=np.float64)
        if "sizey" in value:
            arr = arr.reshape(int(value.sizey), int(value.sizex))
        self.values.append(arr)

    @property
    def latest(self):
        return self.values[-1] if self.values else None

    def close(self):
        self._sub.close()


@pytest.fixture(scope="session")
def ca_context():
    ctx = CaContext()
    yield ctx
    ctx.disconnect()


@pytest.fixture(scope="session")
def pva_context():
    ctx = PvaContext("pva", unwrap=False)    # decode NTNDArray here, independently of p4p.nt
    yield ctx
    ctx.close()


@pytest.fixture
def make_sim(sim_ca_port, unique_prefix, tmp_path):
    """Factory: a started SimBeamline on the test CA port with a random prefix, stopped after."""
    def start(**kwargs):
        options = dict(prefix=unique_prefix + "TomoScanStream:", plugin_prefix=unique_prefix + "Pva1:",
                       width=64, height=64, fps=100.0, ca_port=sim_ca_port, data_dir=tmp_path / "data",
                       num_angles=200, inclusion="none", stages=StageOptions.under(unique_prefix))
        options.update(kwargs)
        (tmp_path / "data").mkdir(exist_ok=True)
        return SimBeamline(**options).start()

    yield from stopped_after(start)


@pytest.fixture
def sim(make_sim):
    return make_sim()


@pytest.fixture
def ca(ca_context, sim):
    return Ca(ca_context, sim.prefix)


@pytest.fixture
def wait():
    """The polling helper :func:`helpers.wait_until`."""
    return wait_until


@pytest.fixture
def ca_for(ca_context):
    """Factory: a :class:`Ca` helper for another prefix."""
    return lambda prefix: Ca(ca_context, prefix)


@pytest.fixture
def pva(pva_context):
    """Factory for p4p monitors (image or field), closed after the test."""
    monitors = []

    def monitor(channel: str, kind: str = "image"):
        mon = ImageMonitor(pva_context, channel) if kind == "image" else FieldMonitor(pva_context, channel)
        monitors.append(mon)
        return mon

    yield monitor
    for mon in monitors:
        mon.close()
