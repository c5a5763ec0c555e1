"""Soak: many frames through simulated detector -> stream server -> published slices.

The simulated beamline runs as deployed, in its own process (``tomostream sim``); the stream
server runs in this process, as ``tomostream serve`` would; a PV Access client counts the
published slices. One scan of ``--frames`` projections at ``--fps`` goes through. Meanwhile the
resident memory (RSS) of the simulator, the server and its publishing process, and the GPU
memory held by CuPy when the server runs on a GPU, are sampled. Pass criteria: no frame
dropped, lost or bad, every frame accounted for (used, or skipped with a reason), and memory
flat within 5 % after the warm-up (the first
``--warmup`` fraction of the frames): the floors of five consecutive windows of samples agree
within 5 % (:func:`memory_stats`). Prints one JSON object::

    .venv/bin/python benchmarks/soak.py                       # 100,000 frames of 512 x 512
    .venv/bin/python benchmarks/soak.py --frames 20000 --fps 150

:func:`soak` is the measuring loop; the test suite runs it on a small in-process beamline.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

#: Largest relative spread of the memory floors after the warm-up that counts as flat.
FLAT = 0.05
#: Windows the samples after the warm-up are cut into (see :func:`memory_stats`).
WINDOWS = 5


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size [bytes] of process ``pid`` (this process when None), from /proc."""
    with open(f"/proc/{pid or 'self'}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for process {pid}")


def _publisher_rss(server) -> int | None:
    """RSS of the server's publishing process (None when it publishes in-process)."""
    pid = getattr(server.publisher, "pid", None)
    try:
        return rss_bytes(pid) if pid else None
    except OSError:                                # between a child's end and its successor
        return None


def gpu_bytes() -> int | None:
    """Bytes held by CuPy's device memory pool in this process; None when CuPy is not in use."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return None
    # the device pool holds the GPU buffers; page-locked host buffers count in the RSS
    return int(cupy.get_default_memory_pool().total_bytes())


class ReconCounter:
    """Counts the updates of the published slices seen by a PV Access client (pvapy monitor)."""

    def __init__(self, channel: str):
        import pvaccess as pva

        self.updates = 0
        self.last_unique_id = 0
        self._channel = pva.Channel(channel)
        self._channel.subscribe("count", self._on_update)
        self._channel.startMonitor("field(uniqueId)")

    def _on_update(self, pv) -> None:
        self.updates += 1
        self.last_unique_id = int(pv["uniqueId"])

    def close(self) -> None:
        self._channel.stopMonitor()
        self._channel.unsubscribe("count")


@dataclass
class Samples:
    """Memory samples taken during the soak, one row per period."""

    t: list = field(default_factory=list)
    used: list = field(default_factory=list)
    rss: list = field(default_factory=list)
    rss_sim: list = field(default_factory=list)
    rss_pub: list = field(default_factory=list)
    gpu: list = field(default_factory=list)


def memory_stats(values: list, windows: int = WINDOWS) -> dict:
    """Flatness of memory samples taken after the warm-up.

    The samples are cut into ``windows`` consecutive windows. The *floor* of a window (its
    smallest sample) is the memory held for good; the *peak* (its largest) adds transients such
    as the work space of a full rebuild of the slices, which a sample may or may not catch. A
    leak raises the floors; ``floor_spread = (max - min) / min`` of the floors is the figure
    held to :data:`FLAT`.

    Returns
    -------
    dict
        ``first``, ``last``, ``min``, ``max`` [bytes], ``floors`` and ``peaks`` per window
        [bytes], ``floor_spread`` and ``floor_growth`` (last floor / first floor - 1); {} when
        there is nothing to measure.
    """
    values = [v for v in values if v is not None]
    if len(values) < windows:
        return {}
    cuts = [len(values) * k // windows for k in range(windows + 1)]
    parts = [values[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    floors, peaks = [min(p) for p in parts], [max(p) for p in parts]
    return {"first": values[0], "last": values[-1], "min": min(values), "max": max(values),
            "floors": floors, "peaks": peaks,
            "floor_spread": round((max(floors) - min(floors)) / min(floors), 4),
            "floor_growth": round(floors[-1] / floors[0] - 1.0, 4)}


def _wait(predicate, timeout: float, what: str, period: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(period)


def accounted(c: dict) -> bool:
    """Whether every frame received (counters ``c``) was used or skipped with a reason."""
    return c["FramesReceived"] - c["FramesBad"] == (c["FramesUsed"] + c["FramesDropped"]
                                                    + c["NotProjection"] + c["OutsideTheta"])


def soak(server, sim_prefix: str, frames: int, *, sim_pid: int | None = None, warmup: float = 0.2,
         period: float = 0.5, timeout: float | None = None) -> dict:
    """Stream one scan of ``frames`` projections through a started server and measure it.

    Parameters
    ----------
    server : StreamServer
        Started, with StartRecon running and following the beamline at ``sim_prefix``.
    sim_prefix : str
        TomoScan prefix of the simulated beamline (NumAngles, StartScan over CA).
    frames : int
        Projections in the scan.
    sim_pid : int, optional
        Process of the simulator, when it runs apart: its RSS is sampled too.
    warmup : float
        Fraction of the frames after which memory must stay flat.
    period : float [s]
        Sampling period.
    timeout : float [s], optional
        Longest the scan may take (default: four times its nominal length plus a minute).

    Returns
    -------
    dict
        Counters, rates, memory statistics and the pass verdicts ``no_drops``,
        ``consistent``, ``memory_flat`` and ``ok``.
    """
    import epics

    fps = 1.0 / float(epics.caget(sim_prefix + "ExposureTime", timeout=5.0))
    timeout = timeout or 4.0 * frames / fps + 60.0
    recon = ReconCounter(server.ioc.value("ReconPVAName"))
    # frames received before the scan (the detector's initial value) must be settled first,
    # or their fate would be counted in the scan's difference
    _wait(lambda: accounted(server.counters), 30.0, "the frames before the scan accounted for")
    before = dict(server.counters)
    samples = Samples()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.t.append(time.monotonic())
            samples.used.append(server.counters.get("FramesUsed", 0) - before.get("FramesUsed", 0))
            samples.rss.append(rss_bytes())
            samples.rss_sim.append(rss_bytes(sim_pid) if sim_pid else None)
            samples.rss_pub.append(_publisher_rss(server))
            samples.gpu.append(gpu_bytes())
            done.wait(period)

    assert epics.caput(sim_prefix + "NumAngles", frames, wait=True, timeout=10.0) == 1
    sampler = threading.Thread(target=sample, name="soak-sampler", daemon=True)
    t0 = time.monotonic()
    sampler.start()
    try:
        assert epics.caput(sim_prefix + "StartScan", 1, wait=True, timeout=timeout) == 1
        scan_s = time.monotonic() - t0

        def delta() -> dict:
            now = server.counters
            return {k: now[k] - before.get(k, 0) for k in now}

        def settled() -> bool:
            c = delta()
            return c["FramesReceived"] + c["FramesLost"] >= frames and accounted(c)

        try:
            _wait(settled, 30.0, "every frame accounted for")
        except TimeoutError:
            pass                                   # reported below as inconsistent
        _wait(lambda: recon.updates > 0, 10.0, "a published update seen by the client")
    finally:
        done.set()
        sampler.join()
        recon.close()
    c = delta()
    start = next((i for i, u in enumerate(samples.used) if u >= warmup * frames), len(samples.used))
    rss = memory_stats(samples.rss[start:])
    rss_sim = memory_stats(samples.rss_sim[start:])
    rss_pub = memory_stats(samples.rss_pub[start:])
    gpu = memory_stats(samples.gpu[start:])
    flat = bool(rss) and all(not m or m["floor_spread"] <= FLAT
                             for m in (rss, rss_sim, rss_pub, gpu))
    result = {
        "frames": frames, "requested_fps": round(fps, 1), "scan_s": round(scan_s, 2),
        "used_fps": round(c["FramesUsed"] / scan_s, 1), "counters": c,
        "published_updates_seen": recon.updates, "published_unique_id": recon.last_unique_id,
        "samples": len(samples.t), "warmup_samples": start,
        "rss_server_bytes": rss, "rss_sim_bytes": rss_sim, "rss_publisher_bytes": rss_pub,
        "gpu_pool_bytes": gpu,
        "no_drops": c["FramesDropped"] == 0 and c["FramesLost"] == 0 and c["FramesBad"] == 0,
        "consistent": c["FramesReceived"] + c["FramesLost"] >= frames and accounted(c),
        "memory_flat": flat,
    }
    result["ok"] = result["no_drops"] and result["consistent"] and flat
    return result


def main(argv: list[str] | None = None) -> int:
    from tomostream.recon.backend import BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000, help="projections [%(default)s]")
    parser.add_argument("--size", type=int, default=512, help="frame side [pixels] [%(default)s]")
    parser.add_argument("--fps", type=float, default=60.0,
                        help="detector rate [%(default)s: the most two cores took without a drop]")
    parser.add_argument("--step", type=float, default=0.5, help="degrees per frame [%(default)s]")
    parser.add_argument("--backend", default="numpy", choices=BACKENDS)
    parser.add_argument("--warmup", type=float, default=0.2, help="warm-up fraction [%(default)s]")
    parser.add_argument("--period", type=float, default=1.0, help="sampling period [s]")
    args = parser.parse_args(argv)

    from tomostream.epics_env import apply_env, free_port, loopback_env

    sim_port, stream_port = free_port(), free_port()
    apply_env(loopback_env(ca_ports=(sim_port, stream_port)))
    import epics

    from tomostream.server import StreamServer
    from tomostream.sim.cli import spawn

    sim_prefix, srv_prefix = "soakS:", "soakT:"
    sim = spawn(["--prefix", sim_prefix, "--plugin-prefix", "soakP:", "--size", str(args.size),
                 "--fps", str(args.fps), "--step", str(args.step), "--num-angles", str(args.frames),
                 "--inclusion", "none", "--photons", "0", "--ca-port", str(sim_port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = StreamServer(srv_prefix, ca_port=stream_port, backend=args.backend,
                       tomoscan_prefix=sim_prefix, image_pvap_name=sim_prefix + "PvaPluginPVPrefix",
                       dark_pva_name=sim_prefix + "StreamDarkFields",
                       flat_pva_name=sim_prefix + "StreamFlatFields",
                       theta_pva_name=sim_prefix + "StreamTheta",
                       recon_pva_name=srv_prefix + "Recon").start()
    try:
        epics.caput(srv_prefix + "StartRecon", 1, wait=False)
        _wait(lambda: srv.ready, 120.0, "the server connected to the simulator")
        result = soak(srv, sim_prefix, args.frames, sim_pid=sim.pid, warmup=args.warmup,
                      period=args.period)
        result["backend"] = srv.reconstructor.backend
    finally:
        epics.caput(srv_prefix + "AbortRecon", 1, wait=True, timeout=10.0)
        srv.stop()
        sim.terminate()
        sim.wait(30)
    print(json.dumps({"benchmark": "soak", "date": time.strftime("%Y-%m-%d"),
                      "machine": platform.machine(), "cpus": os.cpu_count(),
                      "python": platform.python_version(), "size": args.size, **result}, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
