"""docs/stream_scan.ipynb executes headless, end to end."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tomostream.epics_env import free_port

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:jupyter_client.*"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:zmq.*")]

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "stream_scan.ipynb"


def test_notebook_runs(tmp_path, unique_prefix, monkeypatch):
    # the kernel is a fresh process: its own CA ports, prefix and data folder
    for key in list(os.environ):
        if key.startswith(("EPICS_", "TOMOSTREAM_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("TOMOSTREAM_SIM_PORT", str(free_port()))
    monkeypatch.setenv("TOMOSTREAM_STREAM_PORT", str(free_port()))
    monkeypatch.setenv("TOMOSTREAM_NOTEBOOK_PREFIX", unique_prefix)
    monkeypatch.setenv("TOMOSTREAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    log = tmp_path / "kernel.log"   # the kernel's log, shown if the notebook fails
    nb.cells.insert(0, nbformat.v4.new_code_cell(
        f"import logging; logging.basicConfig(filename={str(log)!r}, level=logging.INFO, "
        "format='%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s')"))
    client = NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": tmp_path}})
    client.km = client.create_kernel_manager()
    # the kernel runs this interpreter (the project's environment), whatever kernelspecs exist
    client.km.kernel_cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    try:
        client.execute()
    except Exception:
        print(log.read_text() if log.exists() else "no kernel log")
        raise
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"}
    scan_result = next(o for out in outputs.values() for o in out
                       if o.get("output_type") == "execute_result" and "success" in str(o.get("data")))
    assert "('success', 1)" in scan_result["data"]["text/plain"]
    texts = "".join(o.get("text", "") for out in outputs.values() for o in out)
    # one capture: 5 pre-trigger + up to 10 frames (fewer if the scan ended first), as in its files
    rows = int(re.search(r"\((\d+), 32, 64\)", texts).group(1))
    assert 6 <= rows <= 15 and "frames match the files: True" in texts
    assert any("image/png" in o.get("data", {}) for out in outputs.values() for o in out)
