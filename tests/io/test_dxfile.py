"""DXfile writer/reader: exact layout, atomic no-overwrite writes, path refusal, verification."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from tomostream.errors import BadParameter, CaptureError
from tomostream.io.dxfile import data_checksum, next_capture_path, read_dxfile, write_dxfile


def _capture(k=5, nz=8, n=12, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 4000, size=(k, nz, n)).astype(dtype)
    dark = rng.random((nz, n)).astype(np.float32) * 10
    flat = 1000 + rng.random((nz, n)).astype(np.float32)
    theta = np.arange(k) * 0.5 + 370.0
    ids = np.arange(65533, 65533 + k) % 65536
    return data, dark, flat, theta, ids


def test_layout_and_round_trip(tmp_path):
    data, dark, flat, theta, ids = _capture()
    path = write_dxfile(tmp_path / "a_00001.h5", data, dark, flat, theta, unique_ids=ids,
                        metadata={"instrument/detector/exposure_time": 0.005,
                                  "instrument/source": {"name": "simulated"}},
                        process={"capture": {"pre_count": 2}})
    with h5py.File(path, "r") as f:
        assert f["/exchange/data"].shape == data.shape
        assert f["/exchange/data"].dtype == np.uint16
        assert f["/exchange/data_dark"].shape == (1, 8, 12)
        assert f["/exchange/data_white"].shape == (1, 8, 12)
        np.testing.assert_array_equal(f["/exchange/theta"][()], theta)
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert f["/measurement/instrument/detector/exposure_time"][()] == 0.005
        assert f["/measurement/instrument/source/name"][()].decode() == "simulated"
        assert f["/process/capture/pre_count"][()] == 2
    out = read_dxfile(path, verify=True)
    np.testing.assert_array_equal(out["data"], data)
    np.testing.assert_array_equal(out["dark"][0], dark)
    np.testing.assert_array_equal(out["flat"][0], flat)
    np.testing.assert_array_equal(out["unique_ids"], ids)
    assert out["frame_count"] == 5
    assert out["sha256"] == data_checksum(data)
    # no temporary file left beside it
    assert sorted(os.listdir(tmp_path)) == ["a_00001.h5"]


def test_checksum_detects_tampering(tmp_path):
    data, dark, flat, theta, ids = _capture()
    path = write_dxfile(tmp_path / "b.h5", data, dark, flat, theta, unique_ids=ids)
    with h5py.File(path, "r+") as f:
        f["/exchange/data"][2, 3, 4] += 1
    with pytest.raises(CaptureError, match="SHA-256"):
        read_dxfile(path)
    assert read_dxfile(path, verify=False)["data"][2, 3, 4] == data[2, 3, 4] + 1


def test_never_overwrites(tmp_path):
    data, dark, flat, theta, _ = _capture()
    target = tmp_path / "c.h5"
    target.write_bytes(b"precious")
    with pytest.raises(CaptureError, match="never overwrites"):
        write_dxfile(target, data, dark, flat, theta)
    assert target.read_bytes() == b"precious"


def test_shape_errors_name_the_argument(tmp_path):
    data, dark, flat, theta, _ = _capture()
    with pytest.raises(BadParameter, match="theta"):
        write_dxfile(tmp_path / "d.h5", data, dark, flat, theta[:-1])
    with pytest.raises(BadParameter, match="dark"):
        write_dxfile(tmp_path / "d.h5", data, dark[:, :-1], flat, theta)
    assert not os.listdir(tmp_path)


def test_next_capture_path_increments(tmp_path):
    assert next_capture_path(tmp_path, "scan").name == "scan_00001.h5"
    (tmp_path / "scan_00001.h5").touch()
    (tmp_path / "scan_00007.h5").touch()
    assert next_capture_path(tmp_path, "scan.h5").name == "scan_00008.h5"
    assert next_capture_path(tmp_path, "other.hdf5").name == "other_00001.hdf5"


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "a/../../b", "sub/x", "..", "", "  "])
def test_next_capture_path_refuses_escaping_names(tmp_path, name):
    with pytest.raises(CaptureError, match="FileName"):
        next_capture_path(tmp_path, name)


def test_next_capture_path_skips_symlinks_and_checks_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "captures"
    folder.mkdir()
    (folder / "s_00001.h5").symlink_to(outside / "target.h5")   # dangling link pointing out
    path = next_capture_path(folder, "s")
    assert path.name == "s_00002.h5"
    assert path.parent == folder.resolve()
    with pytest.raises(CaptureError, match="FilePath"):
        next_capture_path(tmp_path / "missing", "s")
    data, dark, flat, theta, _ = _capture()
    with pytest.raises(CaptureError, match="never overwrites"):
        write_dxfile(folder / "s_00001.h5", data, dark, flat, theta)
    assert not list(outside.iterdir())


def test_file_as_folder_refused(tmp_path):
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(CaptureError, match="not a folder"):
        next_capture_path(tmp_path / "plain", "s")
    with pytest.raises(CaptureError, match="FilePath is empty"):
        next_capture_path("", "s")


def test_write_failure_leaves_nothing(tmp_path):
    """A file-size limit makes writing fail as a full disk does: no file, no temporary left."""
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from tomostream.io.dxfile import write_dxfile
        from tomostream.errors import CaptureError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        data = np.ones((40, 64, 64), np.uint16)
        try:
            write_dxfile({str(tmp_path / 'big.h5')!r}, data, data[0], data[0], np.arange(40.0))
        except CaptureError as exc:
            print("CaptureError", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "CaptureError" in out.stdout, out.stderr
    assert not os.listdir(tmp_path)
