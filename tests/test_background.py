"""Background: a loop in a daemon thread, started once and stopped once."""

from __future__ import annotations

import threading

from tomostream.background import Background


def test_a_loop_runs_until_stopped_and_starts_once():
    loop, rounds, started = Background(), [], threading.Event()

    def run() -> None:
        started.set()
        while not loop.stopping.wait(0.01):
            rounds.append(1)

    assert loop.start(run, "test loop") and loop.running
    assert not loop.start(run, "test loop")          # one runs already
    assert started.wait(30.0)
    assert loop.stop(30.0) and not loop.running
    done = len(rounds)
    assert not loop.stop(30.0)                        # idempotent: nothing ran
    assert len(rounds) == done                        # the loop has ended
