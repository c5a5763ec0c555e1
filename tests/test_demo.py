"""``tomostream demo`` end to end, small and fast."""

from __future__ import annotations

import numpy as np
import pytest

from tomostream import demo
from tomostream.io import open_catalog, read_capture

pytestmark = pytest.mark.timeout(120)


def test_demo_runs_captures_and_saves_the_slices(tmp_path, unique_prefix, capsys):
    out = tmp_path / "demo"
    status = demo.main(["--out", str(out), "--prefix", unique_prefix, "--width", "64", "--height", "32",
                        "--angles", "1000", "--step", "1.0", "--threshold", "1e-4", "--num-capture", "10",
                        "--pre-count", "5", "--backend", "numpy"])
    printed = capsys.readouterr().out
    assert status == 0
    assert (out / "final_slices.png").stat().st_size > 1000
    assert f"{unique_prefix}TomoStream:StreamRecon" in printed
    uid = next(line.split()[2] for line in printed.splitlines() if line.startswith("run uid:"))
    capture_line = next(line for line in printed.splitlines() if line.startswith("captures:"))
    assert ".h5" in capture_line
    catalog = open_catalog(data_dir=out / "catalog")  # the run is still there after the demo closed it
    assert catalog[uid].metadata["stop"]["exit_status"] == "success"
    run = catalog[uid]
    rows = int(np.sum(run["captures"].read()["captures_rows"].values))   # every frame of the captures
    assert run["capture"]["capture_projections"].read().shape == (rows, 32, 64)
    files = run["captures"].read()["captures_file"].values
    assert rows == sum(len(read_capture(str(f)).projections) for f in files)
    from tomostream.io.catalog import close_catalog

    close_catalog(out / "catalog")
