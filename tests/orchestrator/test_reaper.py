"""The reaper (issue 12) on a real SQLite MLflow store, watching a real process that stands
in for a sweep's driver: when that process is killed outright its parent run ends KILLED and
its half-logged stage run is discarded; a reaper ended by a sweep that ends normally touches
nothing."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from orchestrator.processes import end_group, owner_tag
from orchestrator.reaper import start
from orchestrator.tracking import Tracker

REAPED_WITHIN_S = 30     # importing mlflow after the driver died: 3-5 s on 2 busy cores


@pytest.fixture
def driver():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def _runs_of(driver_pid: int, tmp_path):
    """A sweep's parent run and its stage runs as the driver `driver_pid` left them: one
    half-logged (RUNNING), one finished; plus another live sweep's run being logged."""
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    parent = tracker.start_sweep("sweep-1", "exp", {}, "plan")
    owner = owner_tag(driver_pid)
    tracker.client.set_tag(parent, "logged_by", owner)
    client, experiment = tracker.client, tracker.experiment_id

    def stage(key: str, by: str) -> str:
        tags = {"synthscale_kind": "stage", "cache_key": key, "logged_by": by,
                "mlflow.parentRunId": parent}
        return client.create_run(experiment, tags=tags).info.run_id
    runs = {"parent": parent, "half": stage("a", owner), "done": stage("b", owner),
            "other": stage("c", owner_tag())}
    client.set_terminated(runs["done"], status="FINISHED")
    return tracker, runs


def _state(tracker, run_id: str) -> tuple[str, str]:
    info = tracker.client.get_run(run_id).info
    return info.status, info.lifecycle_stage


def test_a_killed_drivers_runs_are_ended_and_nothing_else(tmp_path, driver):
    tracker, runs = _runs_of(driver.pid, tmp_path)
    reaper = start(tracker.uri, tracker.experiment_id, runs["parent"], tmp_path / "reaper.log",
                   driver=driver.pid)
    try:
        time.sleep(2)
        assert reaper.poll() is None and _state(tracker, runs["parent"])[0] == "RUNNING"
        driver.kill()
        killed_at = time.monotonic()
        reaper.wait(timeout=REAPED_WITHIN_S)
        took = time.monotonic() - killed_at
    finally:
        end_group(reaper)
    log = (tmp_path / "reaper.log").read_text()
    assert reaper.returncode == 0, log
    assert "ended 2 run(s)" in log, log
    print(f"runs ended {took:.1f} s after the kill")
    assert _state(tracker, runs["parent"]) == ("KILLED", "active")
    assert _state(tracker, runs["half"]) == ("KILLED", "deleted")
    assert _state(tracker, runs["done"]) == ("FINISHED", "active")      # the driver's own status
    assert _state(tracker, runs["other"]) == ("RUNNING", "active")      # a live logger's


def test_a_reaper_ended_by_its_sweep_changes_nothing(tmp_path, driver):
    tracker, runs = _runs_of(driver.pid, tmp_path)
    reaper = start(tracker.uri, tracker.experiment_id, runs["parent"], tmp_path / "reaper.log",
                   driver=driver.pid)
    time.sleep(1)
    end_group(reaper)                       # as run_sweep's end does, the driver alive
    assert reaper.poll() is not None
    driver.kill()
    driver.wait()
    time.sleep(2)
    assert _state(tracker, runs["parent"]) == ("RUNNING", "active")
    assert _state(tracker, runs["half"]) == ("RUNNING", "active")
    assert (tmp_path / "reaper.log").read_text() == ""


def test_a_parent_run_reopened_by_a_later_attempt_is_left_alone(tmp_path, driver):
    """The next attempt of the sweep reopened the parent run before the reaper of the killed
    one got to it: that run is the new attempt's now."""
    tracker, runs = _runs_of(driver.pid, tmp_path)
    tracker.client.set_tag(runs["parent"], "logged_by", owner_tag())     # the new attempt's
    reaper = start(tracker.uri, tracker.experiment_id, runs["parent"], tmp_path / "reaper.log",
                   driver=driver.pid)
    try:
        driver.kill()
        reaper.wait(timeout=REAPED_WITHIN_S)
    finally:
        end_group(reaper)
    assert _state(tracker, runs["parent"]) == ("RUNNING", "active")
    assert _state(tracker, runs["half"]) == ("KILLED", "deleted")
