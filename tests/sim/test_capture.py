"""StreamCapture over real CA/PVA: pre-count, file content = streamed frames, no overwrite, full disk."""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomostream.io.dxfile import read_dxfile


def _start(make_sim, ca_for, pva, wait, **kwargs):
    sim = make_sim(num_angles=100000, photons=500.0, **kwargs)
    ca = ca_for(sim.prefix)
    images = pva(sim.image_channel)
    wait(lambda: images.snapshot(), what="initial image")
    ca.put("StartScan", "Acquire", wait=False)
    return sim, ca, images


def test_capture_with_precount_equals_streamed_frames(make_sim, ca_for, pva, wait, tmp_path):
    sim, ca, images = _start(make_sim, ca_for, pva, wait)
    ca.put("FileName", "sample")
    ca.put("StreamPreCount", 10)
    ca.put("StreamNumCapture", 15)
    wait(lambda: len(images.snapshot()) > 30, what="pre-trigger frames")
    ca.put("StreamCapture", "Capture", timeout=20)            # completes when the file is closed
    assert ca.get("StreamCapture") == "Done"
    path = ca.get("StreamFileName")
    assert path.endswith("sample_00001.h5") and path.startswith(str(tmp_path / "data"))
    assert ca.get("StreamPreCounted") == 10 and ca.get("StreamNumCaptured") == 15
    assert ca.get("StreamNumTotalCaptured") == 25
    content = read_dxfile(path, verify=True)
    streamed = {uid: frame for uid, frame, _ in images.snapshot()}
    ids = content["unique_ids"]
    assert list(ids) == list(range(ids[0], ids[0] + 25))      # in order, no gap
    for i, uid in enumerate(ids):
        np.testing.assert_array_equal(content["data"][i], streamed[uid])
    first = int(ca.get("FirstProjid"))
    np.testing.assert_allclose(content["theta"], sim.theta[ids - first])
    with h5py.File(path, "r") as f:
        assert f["/exchange/data"].shape == (25, 64, 64)
        assert f["/exchange/data_dark"].shape[1:] == f["/exchange/data_white"].shape[1:] == (64, 64)
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert "/measurement/instrument/detector/exposure_time" in f
    # a second capture never overwrites the first
    ca.put("StreamPreCount", 0)
    ca.put("StreamNumCapture", 5)
    ca.put("StreamCapture", "Capture", timeout=20)
    assert ca.get("StreamFileName").endswith("sample_00002.h5")
    assert read_dxfile(path)["unique_ids"].tolist() == ids.tolist()
    ca.put("AbortScan", "Yes")


@pytest.fixture
def file_size_limit():
    """Make writes past ``limit`` bytes fail (EFBIG) in this process, as a full disk would."""
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)

    def apply(limit: int):
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))

    yield apply
    resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
    signal.signal(signal.SIGXFSZ, old_handler)


def test_full_disk_fails_capture_but_scan_continues(make_sim, ca_for, pva, wait, tmp_path, file_size_limit):
    sim, ca, images = _start(make_sim, ca_for, pva, wait)
    ca.put("StreamNumCapture", 4)
    ca.put("StreamCapture", "Capture", timeout=20)
    good = ca.get("StreamFileName")
    before = Path(good).read_bytes()
    ca.put("StreamNumCapture", 60)                            # ~500 kB: more than the limit
    file_size_limit(200_000)
    ca.put("StreamCapture", "Capture", timeout=20)
    file_size_limit(resource.RLIM_INFINITY)
    message = ca.get("StreamMessage")
    assert "StreamCapture failed" in message and "File too large" in message
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["stream_00001.h5"]
    assert Path(good).read_bytes() == before
    n = len(images.snapshot())
    wait(lambda: len(images.snapshot()) > n + 10, what="scan continuing")
    assert ca.get("StartScan") == "Acquire"
    ca.put("AbortScan", "Yes")
