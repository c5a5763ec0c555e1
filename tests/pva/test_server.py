"""PvaChannels: add, update, remove, errors, seen by an independent p4p client."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tomostream.errors import BadParameter
from tomostream.pva.fields import field_pv, theta_pv
from tomostream.pva.ntnda import to_ntnda
from tomostream.pva.server import PvaChannels


def test_add_update_remove_seen_by_p4p(channels, p4p_ctx, unique_prefix):
    a, b = unique_prefix + "A", unique_prefix + "B"
    channels.add(b, theta_pv([1.0]))
    channels.add(a, to_ntnda(np.zeros((2, 3), np.uint8), 1))
    assert channels.names == (a, b) and a in channels
    channels.update(a, to_ntnda(np.ones((2, 3), np.uint8), 2))
    assert p4p_ctx.get(a, timeout=5.0).raw.uniqueId == 2
    channels.remove(a)
    assert channels.names == (b,) and a not in channels
    with pytest.raises(TimeoutError):
        p4p_ctx.get(a, timeout=0.3)


def test_errors_name_the_channel(channels, unique_prefix):
    name = unique_prefix + "Theta"
    channels.add(name, theta_pv([1.0]))
    with pytest.raises(BadParameter, match=f"{name!r} is already served"):
        channels.add(name, theta_pv([2.0]))
    with pytest.raises(BadParameter, match="does not match"):
        channels.update(name, field_pv(np.zeros((2, 2))))
    with pytest.raises(BadParameter, match="Missing' is not served"):
        channels.update(unique_prefix + "Missing", theta_pv([1.0]))
    with pytest.raises(BadParameter, match="not served"):
        channels.remove(unique_prefix + "Missing")
    with pytest.raises(BadParameter, match="empty"):
        channels.add("", theta_pv([1.0]))


def test_stop_is_idempotent_and_frees_names(p4p_ctx, unique_prefix):
    name = unique_prefix + "Theta"
    with PvaChannels() as first:
        first.add(name, theta_pv([1.0]))
        assert p4p_ctx.get(name, timeout=5.0).sizex == 1
    first.stop()
    assert first.names == ()
    with PvaChannels() as second:
        second.add(name, theta_pv([1.0, 2.0]))
        assert p4p_ctx.get(name, timeout=5.0).sizex == 2


def test_the_added_object_stays_the_callers(channels, p4p_ctx, unique_prefix, wait):
    """pvapy makes the object given to addRecord the record itself: restamping it afterwards
    (as a source re-sending prebuilt frames does) would post once per field set, with the new
    uniqueId over whatever pixels the record held. Each update must reach a monitor once,
    whole."""
    from tomostream.pva.ntnda import restamp

    name = unique_prefix + "Image"
    first, second = (to_ntnda(np.full((4, 6), k, np.uint16), 1) for k in (7, 9))
    channels.add(name, first)
    seen = []
    sub = p4p_ctx.monitor(name, lambda v: seen.append((v.raw.uniqueId, int(v[0, 0]))),
                          request="record[queueSize=50]")
    try:
        wait(lambda: seen, what="first value")
        channels.update(name, restamp(second, 2))
        channels.update(name, restamp(first, 3))
        channels.update(name, restamp(second, 4))
        wait(lambda: seen[-1][0] == 4, what="uniqueId 4")
        time.sleep(0.3)
    finally:
        sub.close()
    assert seen == [(1, 7), (2, 9), (3, 7), (4, 9)]
