"""StreamCapture over real CA/PVA leaves exactly TomoScan's files: main, circular buffer, fields.

How many frames each file holds is read from the files and checked against the PVs, never
assumed from how fast the machine keeps the frame rate.
"""

from __future__ import annotations

import resource
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomostream.errors import CaptureError
from tomostream.io.capture import missing_parts, read_capture, wait_complete

DARK, FLAT = "/exchange/data_dark", "/exchange/data_white"


def _start(make_sim, ca_for, pva, wait, **kwargs):
    sim = make_sim(**{"num_angles": 100000, "photons": 500.0, **kwargs})
    ca = ca_for(sim.prefix)
    images = pva(sim.image_channel)
    wait(lambda: images.snapshot(), what="initial image")
    ca.put("StartScan", "Acquire", wait=False)
    return sim, ca, images


def _capture_files(directory: Path, base: str) -> list[Path]:
    """The projection files of capture ``base`` that exist, circular buffer first."""
    return [p for p in (directory / f"circular_buffer_{base}", directory / base) if p.exists()]


def test_capture_leaves_tomoscan_files(make_sim, ca_for, pva, wait, tmp_path):
    sim, ca, images = _start(make_sim, ca_for, pva, wait)
    data = tmp_path / "data"
    ca.put("FileName", "sample")
    ca.put("StreamPreCount", 10)
    ca.put("StreamNumCapture", 15)
    assert ca.get("StreamMessage") == "Done"
    wait(lambda: ca.get("StreamPreCounted") == 10, what="circular buffer filled (StreamPreCounted)")
    ca.put("StreamCapture", "Capture", timeout=20)            # completes when both files are written
    assert ca.get("StreamCapture") == "Done" and ca.get("StreamMessage") == "Done"
    base = ca.get("StreamFileName")
    assert base == "sample_00001.h5"                          # base name only; the folder is FilePath
    main, pre = data / base, data / f"circular_buffer_{base}"
    wait_complete([pre, main], timeout=20)
    projection_files = [base, f"circular_buffer_{base}"]      # each with its copies of the fields
    assert sorted(p.name for p in data.iterdir()) == sorted(
        projection_files + [f"{kind}_fields_{name}" for kind in ("dark", "flat") for name in projection_files]
        + ["dark_fields.h5", "flat_fields.h5"])
    assert ca.get("StreamNumCaptured") == 15 and ca.get("StreamNumTotalCaptured") == 25

    streamed = {uid: frame for uid, frame, _ in images.snapshot()}
    first = int(ca.get("FirstProjid"))
    ids = []
    for path, count in ((pre, 10), (main, 15)):
        with h5py.File(path, "r") as f:
            assert f["/exchange/data"].shape == (count, 64, 64)
            assert f["/exchange/theta"].dtype == np.float32
            file_ids = f["/defaults/NDArrayUniqueId"][()]
            for i, uid in enumerate(file_ids):
                np.testing.assert_array_equal(f["/exchange/data"][i], streamed[uid])
            np.testing.assert_allclose(f["/exchange/theta"][()], sim.theta[file_ids - first], rtol=1e-6)
            with h5py.File(data / f"dark_fields_{base}", "r") as d:
                np.testing.assert_array_equal(f[DARK][()], d[DARK][()])
            ids += file_ids.tolist()
    assert ids == list(range(ids[0], ids[0] + 25))            # pre-trigger frames just before the rest

    capture = read_capture(main)
    assert capture.pre_count == 10 and capture.unique_ids.tolist() == ids
    assert capture.projections.shape == (25, 64, 64) and capture.theta.shape == (25,)
    # the circular buffer restarts empty after a capture and fills again (its live fill)
    wait(lambda: ca.get("StreamPreCounted") == 10, what="circular buffer refilled")

    # a second capture never overwrites the first; no pre-count, no circular-buffer file
    before = main.read_bytes()
    ca.put("StreamPreCount", 0)
    ca.put("StreamNumCapture", 5)
    ca.put("StreamCapture", "Capture", timeout=20)
    assert ca.get("StreamFileName") == "sample_00002.h5"
    assert _capture_files(data, "sample_00002.h5") == [data / "sample_00002.h5"]
    assert ca.get("StreamNumTotalCaptured") == 30
    assert main.read_bytes() == before
    ca.put("AbortScan", "Yes")


def test_fields_added_after_done_are_waited_for(make_sim, ca_for, pva, wait, tmp_path):
    # the field-copy thread waits until the simulator stops: Done comes long before the fields
    sim, ca, images = _start(make_sim, ca_for, pva, wait, field_copy_delay=3600.0)
    ca.put("StreamNumCapture", 4)
    ca.put("StreamCapture", "Capture", timeout=20)
    main = tmp_path / "data" / ca.get("StreamFileName")
    assert missing_parts(main) == [DARK, FLAT]
    with pytest.raises(CaptureError, match=f"{main.name} lacks {DARK}, {FLAT}"):
        wait_complete([main], timeout=0.2)
    with pytest.raises(CaptureError, match="lacks"):
        read_capture(main)
    ca.put("AbortScan", "Yes")
    sim.stop()                                                # ends the delay: the copy runs now
    wait_complete([main], timeout=20)
    assert read_capture(main).dark.shape[1:] == (64, 64)


def test_empty_circular_buffer_leaves_no_file(make_sim, ca_for, pva, wait, tmp_path):
    sim = make_sim(num_angles=100000)
    ca = ca_for(sim.prefix)
    ca.put("StreamPreCount", 8)
    ca.put("StreamNumCapture", 6)
    done = ca.put("StreamCapture", "Capture", wait=False)     # armed before any frame: empty buffer
    wait(lambda: ca.get("StreamMessage") == "Capturing projections", what="capture armed")
    ca.put("StartScan", "Acquire", wait=False)
    wait(lambda: ca.get("StreamCapture") == "Done", timeout=20, what="capture done")
    del done
    base = ca.get("StreamFileName")
    assert _capture_files(tmp_path / "data", base) == [tmp_path / "data" / base]
    assert ca.get("StreamNumTotalCaptured") == 6
    wait_complete([tmp_path / "data" / base], timeout=20)
    capture = read_capture(tmp_path / "data" / base)
    assert capture.pre_count == 0 and len(capture.projections) == 6
    ca.put("AbortScan", "Yes")


def test_buffer_holding_fewer_frames_than_pre_count(make_sim, ca_for, pva, wait, tmp_path):
    sim, ca, images = _start(make_sim, ca_for, pva, wait)
    ca.put("StreamPreCount", sim.ring_size)                   # more than it will hold at the trigger
    ca.put("StreamNumCapture", 5)
    wait(lambda: ca.get("StreamPreCounted") >= 3, what="a few frames in the circular buffer")
    ca.put("StreamCapture", "Capture", timeout=20)
    base = ca.get("StreamFileName")
    files = _capture_files(tmp_path / "data", base)
    wait_complete(files, timeout=20)
    capture = read_capture(files[-1])
    assert 3 <= capture.pre_count < sim.ring_size
    assert ca.get("StreamNumTotalCaptured") == capture.pre_count + 5 == len(capture.projections)
    ids = capture.unique_ids.tolist()
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    ca.put("AbortScan", "Yes")


def test_retake_skipped_while_capturing(make_sim, ca_for, pva, wait, tmp_path):
    sim, ca, images = _start(make_sim, ca_for, pva, wait)
    ca.put("StreamNumCapture", 100000)                        # runs until stopped
    ca.put("StreamCapture", "Capture", wait=False)
    wait(lambda: ca.get("StreamMessage") == "Capturing projections", what="capture running")
    n = len(images.snapshot())
    ca.put("StreamRetakeDark", "Capture", timeout=10)         # TomoScan ignores it: not Done
    assert ca.get("StreamRetakeDark") == "Done" and ca.get("FrameType") == "Projection"
    wait(lambda: ca.get("StreamNumCaptured") > 0 and len(images.snapshot()) > n + 5, what="frames")
    ca.put("StreamCapture", "Done")                           # stop: the frames so far are saved
    wait(lambda: ca.get("StreamMessage") == "Done", timeout=20, what="capture stopped")
    main = tmp_path / "data" / ca.get("StreamFileName")
    wait_complete([main], timeout=20)
    assert len(read_capture(main).projections) == ca.get("StreamNumTotalCaptured") > 0
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
    data = tmp_path / "data"
    ca.put("StreamNumCapture", 4)
    ca.put("StreamCapture", "Capture", timeout=20)
    good = data / ca.get("StreamFileName")
    wait_complete([good], timeout=20)
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    ca.put("StreamNumCapture", 60)                            # ~500 kB: more than the limit
    file_size_limit(200_000)
    ca.put("StreamCapture", "Capture", timeout=20)
    file_size_limit(resource.RLIM_INFINITY)
    message = ca.get("StreamMessage")
    assert "StreamCapture failed" in message and "File too large" in message
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before   # nothing half-written
    n = len(images.snapshot())
    wait(lambda: len(images.snapshot()) > n + 10, what="scan continuing")
    assert ca.get("StartScan") == "Acquire"
    ca.put("AbortScan", "Yes")
