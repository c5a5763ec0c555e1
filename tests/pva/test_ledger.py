"""IdLedger: uniqueIds of one stream spread over several channels, each counted once."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tomostream.pva.ledger import LATE_IDS, IdLedger


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _spread(ids: list[int], channels: int, seed: int) -> list[int]:
    """``ids`` dealt to ``channels`` channels at random, then the channels' deliveries
    interleaved at random, each channel keeping its own order (as NDPluginScatter and
    several PVA connections do)."""
    rng = random.Random(seed)
    streams = [[] for _ in range(channels)]
    for uid in ids:
        streams[rng.randrange(channels)].append(uid)
    merged = []
    while any(streams):
        stream = rng.choice([s for s in streams if s])
        merged.append(stream.pop(0))
    return merged


@settings(max_examples=60, deadline=None)
@given(total=st.integers(1, 1500), channels=st.integers(1, 4), seed=st.integers(0, 2**16),
       first=st.sampled_from([1, 5000, 65535 - 700, 2**31 - 1 - 700]),
       lose=st.floats(0.0, 0.3))
def test_every_id_counted_once_whatever_channel_brings_it(total, channels, seed, first, lose):
    rng = random.Random(seed)
    ids, removed = [], 0
    for k in range(total):
        uid = first + k
        if uid > 2**31 - 1:
            uid -= 2**31          # int32 counter wrapping to zero
        elif first == 65535 - 700 and uid > 65535:
            uid -= 65536          # 16-bit detector counter
        if k and k < total - 1 and rng.random() < lose:
            removed += 1          # never sent (the first and last always are)
        else:
            ids.append(uid)
    ledger = IdLedger(clock=Clock())
    assert all(ledger.see(uid) for uid in _spread(ids, channels, seed))
    assert ledger.missing == removed and ledger.lost == 0  # may still come: within reorder_s
    ledger.settle()
    assert (ledger.lost, ledger.missing, ledger.repeated, ledger.restarts) == (removed, 0, 0, 0)
    assert ledger.last_unique_id == ids[-1]


def test_lost_after_reorder_time_and_taken_back_when_the_frame_comes_late():
    clock = Clock()
    ledger = IdLedger(clock=clock, reorder_s=1.0)
    for uid in (10, 11, 14):
        ledger.see(uid)
    clock.now = 0.5
    assert (ledger.missing, ledger.lost) == (2, 0)
    clock.now = 1.1
    assert (ledger.missing, ledger.lost) == (0, 2)
    assert ledger.see(12)            # came over a slow channel after all
    assert ledger.lost == 1
    assert not ledger.see(12) and ledger.repeated == 1


def test_last_unique_id_before_counts_ids_missed_since():
    ledger = IdLedger(last_unique_id=100, clock=Clock())
    ledger.see(104)
    ledger.settle()
    assert ledger.lost == 3


def test_repeats_and_new_acquisitions_are_no_loss():
    ledger = IdLedger(clock=Clock())
    for uid in (1000, 1001, 1001, 1002, 1, 2, 4):
        ledger.see(uid)
    ledger.settle()
    assert (ledger.repeated, ledger.restarts, ledger.lost) == (1, 1, 1)


def test_a_long_gap_is_counted_in_bounded_memory():
    ledger = IdLedger(clock=Clock())
    ledger.see(1)
    ledger.see(2_000_002)             # the detector ran 2 million frames unseen
    assert ledger.missing == LATE_IDS
    assert ledger.see(2_000_001)      # the frame just before still matches its gap
    ledger.settle()
    assert ledger.lost == 1_999_999
