"""A short soak: a few thousand frames through beamline -> server -> published slices.

The same measuring loop as ``benchmarks/soak.py`` (100,000 frames of 512 x 512 there), on a
small in-process beamline: no frame dropped, lost or bad, every frame accounted for, the
slices published all along, memory flat after the warm-up.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rel_helpers import start_recon

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import soak  # noqa: E402

FRAMES = 2000
#: Detector rate [frames/s]: what sim and server sharing one process (and the GIL) sustain on
#: 2 busy cores with room to spare (about 380 frames/s is their limit at 64 x 64).
FPS = 250.0


def test_short_soak_has_no_drops_and_flat_memory(beamline, make_server, ca, sim_prefix, wait_until):
    """2,000 frames of 64 x 64, sim and server in one process."""
    beamline.set_fps(FPS)
    server = make_server()
    start_recon(ca, server)
    result = soak.soak(server, sim_prefix, FRAMES, warmup=0.3, period=0.2)
    c = result["counters"]
    assert result["no_drops"], json.dumps(result)
    assert result["consistent"], c
    assert c["FramesReceived"] == FRAMES and c["FramesUsed"] >= FRAMES - 2, c
    wait_until(lambda: ca.get("FramesUsed") == server.counters["FramesUsed"], 5.0, "FramesUsed published")
    assert result["published_updates_seen"] > 10
    assert result["published_unique_id"] >= result["published_updates_seen"]
    rss = result["rss_server_bytes"]
    assert result["samples"] - result["warmup_samples"] >= 2 * soak.WINDOWS
    assert rss["floor_spread"] <= soak.FLAT, rss   # RSS growth bounded after the warm-up
    assert rss["max"] <= 1.2 * rss["floors"][0], rss  # and no transient far above it
    pub = result["rss_publisher_bytes"]                 # the publishing process too
    assert pub and pub["floor_spread"] <= soak.FLAT, pub
    assert result["memory_flat"] and result["ok"]
