"""MLflow tracking on a real (SQLite) store: a stage is logged once, and a run whose
logging broke off is replaced, not counted as logged."""

from __future__ import annotations

import socket
import time

from orchestrator.config import config_from_dict
from orchestrator.planning import expand_grid
from orchestrator.store import Outcome
from orchestrator.tracking import ABANDONED_SECONDS, Tracker


def stage_runs(tracker):
    return [r for r in tracker._search("tags.synthscale_kind = 'stage'")]


def test_a_stage_is_logged_once_and_a_broken_run_is_replaced(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    spec = plan.specs[1]
    outcome = Outcome(spec.key, spec.stage, str(tmp_path), {"wall_seconds": 1.5}, False, "node", 1.5)

    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {"grid": {"sizes": [10]}}, "plan")
    assert tracker.log_stage(spec, outcome, {}, []) is not None
    assert tracker.log_stage(spec, outcome, {}, []) is None          # already there
    # A broken-off run of another stage: tagged, never finished, long ago.
    other = plan.specs[2]
    old = int((time.time() - ABANDONED_SECONDS - 60) * 1000)
    broken = tracker.client.create_run(tracker.experiment_id, start_time=old, tags={
        "synthscale_kind": "stage", "cache_key": other.key}).info.run_id
    # One that another sweep is logging right now must be left alone.
    fresh_key = plan.specs[3].key
    tracker.client.create_run(tracker.experiment_id, tags={
        "synthscale_kind": "stage", "cache_key": fresh_key})
    tracker.end_sweep("FINISHED")

    again = Tracker(uri, "exp", tmp_path / "artifacts")
    assert spec.key in again.logged and other.key not in again.logged
    assert tracker.client.get_run(broken).info.lifecycle_stage == "deleted"
    assert {r.data.tags["cache_key"] for r in stage_runs(again)} == {spec.key, fresh_key}
    again.start_sweep("sweep-1", "exp", {}, "plan")
    assert again.log_stage(other, outcome, {}, []) is not None
    finished = [r for r in stage_runs(again) if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["cache_key"] for r in finished) == sorted([spec.key, other.key])


def test_logging_cut_off_by_ctrl_c_or_a_dead_process_leaves_no_second_run(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) while a stage run is being logged deletes that half-logged run; one
    left by a process that was killed outright is deleted by the next sweep at once."""
    import subprocess
    import sys

    import pytest

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    spec, other = plan.specs[1], plan.specs[2]
    outcome = Outcome(spec.key, spec.stage, str(tmp_path), {"wall_seconds": 1.5}, False, "node", 1.5)
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {}, "plan")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tracker, "_log_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tracker.log_stage(spec, outcome, {}, [])
    assert stage_runs(tracker) == []

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    tracker.client.create_run(tracker.experiment_id, tags={
        "synthscale_kind": "stage", "cache_key": other.key, "logged_by": f"{host}:{child.pid}"})
    assert other.key not in Tracker(uri, "exp", tmp_path / "artifacts").logged
    assert stage_runs(tracker) == []            # the dead process's run is gone, not 10 min later
