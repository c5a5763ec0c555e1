"""Throughput of the PV Access layer: NTNDArray encoding and the image subscriber.

``python -m tomostream.pva.bench [--width 512 --height 512 --frames 3000 --busy 1]`` prints
one JSON object. The subscriber figure is measured against a pvapy server in another process
that posts frames at the given rates (pre-built, only ``uniqueId`` and time change), so it is
the smaller of what that server sends and what :class:`ImageSubscriber` takes in; ``lost``
says how many ids never arrived, and ``receive_p50_ms`` / ``receive_p99_ms`` how long after
being posted (its timestamp) a frame was decoded. ``--busy N`` keeps N pure-Python threads
spinning in the subscriber's process meanwhile, as the stream server's worker does: a
subscriber that must take the GIL back once per frame falls behind then. ``--process``
receives in a child process (:class:`~tomostream.pva.receive_process.ProcessImageSubscriber`);
``take_p50_ms`` / ``take_p99_ms`` say how long after being posted the caller had a frame.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import threading
import time
import uuid

import numpy as np

from ..epics_env import apply_env, loopback_env


def measure_encode(width: int = 2048, height: int = 2048, dtype: str = "uint16",
                   repeats: int = 20) -> dict:
    """Median and best time [ms] of :func:`to_ntnda` for one frame."""
    from .ntnda import from_ntnda, to_ntnda

    image = np.random.default_rng(0).integers(0, 4000, (height, width)).astype(dtype)
    times, decode = [], []
    for uid in range(repeats):
        t0 = time.perf_counter()
        pv = to_ntnda(image, uid)
        t1 = time.perf_counter()
        from_ntnda(pv)
        times.append(t1 - t0)
        decode.append(time.perf_counter() - t1)
    return {"encode_ms_median": 1e3 * float(np.median(times)), "encode_ms_best": 1e3 * min(times),
            "decode_ms_median": 1e3 * float(np.median(decode)), "width": width, "height": height,
            "dtype": dtype}


def _serve(name: str, width: int, height: int, frames: int, rate: float, ready, go) -> None:
    from .ntnda import restamp, to_ntnda
    from .server import PvaChannels

    images = [np.full((height, width), k, np.uint16) for k in range(4)]
    pvs = [to_ntnda(img, 0) for img in images]
    with PvaChannels() as channels:
        channels.add(name, pvs[0])
        ready.set()
        go.wait(30)
        start = time.perf_counter()
        for uid in range(1, frames + 1):
            if rate > 0:
                while time.perf_counter() < start + uid / rate:
                    pass
            channels.update(name, restamp(pvs[uid % len(pvs)], uid))
        time.sleep(2.0)  # let the client drain before the server goes away


@contextlib.contextmanager
def busy_threads(count: int):
    """``count`` threads running pure-Python work (holding the GIL but for the switch interval)."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(2000))

    threads = [threading.Thread(target=spin, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()


def measure_subscriber(width: int = 512, height: int = 512, frames: int = 3000,
                       queue_size: int = 64, rate: float = 0.0, busy: int = 0,
                       process: bool = False) -> dict:
    """Frames/s an :class:`ImageSubscriber` (a :class:`ProcessImageSubscriber` when
    ``process``) receives from a server process.

    The server posts ``frames`` frames at ``rate`` [frames/s], or flat out when 0, while
    ``busy`` pure-Python threads run in this process.
    """
    from .receive_process import ProcessImageSubscriber
    from .subscriber import ImageSubscriber

    name = f"bench{uuid.uuid4().hex[:8]}:Image"
    ctx = mp.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    server = ctx.Process(target=_serve, args=(name, width, height, frames, rate, ready, go), daemon=True)
    server.start()
    try:
        ready.wait(30)
        kind = ProcessImageSubscriber if process else ImageSubscriber
        with kind(name, queue_size=queue_size) as sub:
            first = sub.get(10.0)
            if first is None:
                raise TimeoutError(f"no frame from {name} within 10 s")
            with busy_threads(busy):
                go.set()
                t_go = time.perf_counter()
                taken, t_last, delays, takes = 0, t_go, [], []
                while sub.last_unique_id != frames:
                    frame = sub.get(1.0)  # then take everything queued, as a batching caller does
                    if frame is None:
                        break  # the last frames were lost
                    batch = [frame, *sub.drain()]
                    now = time.time()
                    delays.extend(f.received - f.timestamp for f in batch)
                    takes.extend(now - f.timestamp for f in batch)
                    taken += len(batch)
                    t_last = time.perf_counter()
            elapsed = t_last - t_go
            counters = dict(sub.counters)
        received_rate = (counters["received"] - 1) / elapsed
        receive = ({"receive_p50_ms": 1e3 * float(np.percentile(delays, 50)),
                    "receive_p99_ms": 1e3 * float(np.percentile(delays, 99)),
                    "take_p50_ms": 1e3 * float(np.percentile(takes, 50)),
                    "take_p99_ms": 1e3 * float(np.percentile(takes, 99))} if delays else {})
        return {"frames_per_s": received_rate, "posted_per_s": rate or "flat out", "busy_threads": busy,
                "process": process,
                **receive,
                "mb_per_s": received_rate * width * height * 2 / 1e6, "taken": taken,
                "width": width, "height": height, "frames": frames, "cpus": os.cpu_count(),
                **counters}
    finally:
        server.join(10)
        if server.is_alive():
            server.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tomostream.pva.bench", description=__doc__)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--rates", type=float, nargs="*", default=[0.0, 1000.0, 2000.0, 3000.0],
                        help="posting rates [frames/s] to try; 0 = flat out")
    parser.add_argument("--busy", type=int, default=0,
                        help="pure-Python threads kept busy in the subscriber's process")
    parser.add_argument("--process", action="store_true",
                        help="receive in a child process (ProcessImageSubscriber)")
    args = parser.parse_args(argv)
    apply_env(loopback_env())
    result = {"encode_2048": measure_encode(),
              "subscriber": [measure_subscriber(args.width, args.height, args.frames, rate=rate,
                                                busy=args.busy, process=args.process)
                             for rate in args.rates]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
