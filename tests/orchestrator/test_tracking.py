"""MLflow tracking on a real (SQLite) store: a stage is logged once, and a run whose
logging broke off is replaced, not counted as logged."""

from __future__ import annotations

import socket
import time

import pytest

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


@pytest.mark.parametrize("cut_in", ["_lost_race", "_log_metrics"])
def test_logging_cut_off_by_ctrl_c_or_a_dead_process_leaves_no_second_run(tmp_path, monkeypatch,
                                                                          cut_in):
    """Ctrl-C (or SIGTERM) while a stage run is being logged, from the check just after its
    run was created on, ends and deletes that half-logged run; one left by a process that
    was killed outright is deleted by the next sweep at once."""
    import subprocess
    import sys

    from mlflow.entities import ViewType

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    spec, other = plan.specs[1], plan.specs[2]
    outcome = Outcome(spec.key, spec.stage, str(tmp_path), {"wall_seconds": 1.5}, False, "node", 1.5)
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {}, "plan")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(tracker, cut_in, interrupted)
    with pytest.raises(KeyboardInterrupt):
        tracker.log_stage(spec, outcome, {}, [])
    assert stage_runs(tracker) == []
    in_trash = tracker.client.search_runs([tracker.experiment_id], "tags.synthscale_kind = 'stage'",
                                          run_view_type=ViewType.ALL)
    assert [r.info.status for r in in_trash] == ["KILLED"]      # never RUNNING, even deleted
    monkeypatch.undo()

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    host = socket.gethostname()
    tracker.client.create_run(tracker.experiment_id, tags={
        "synthscale_kind": "stage", "cache_key": other.key, "logged_by": f"{host}:{child.pid}"})
    assert other.key not in Tracker(uri, "exp", tmp_path / "artifacts").logged
    assert stage_runs(tracker) == []            # the dead process's run is gone, not 10 min later


def test_a_stage_run_spans_its_real_times_and_names_its_datasets(tmp_path):
    """Duration in the MLflow UI is the stage's own (here an hour ago, for ten minutes),
    and a training stage's data and an evaluation's test split are its dataset inputs."""
    from orchestrator.training import TrainResult

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    sft = next(s for s in plan.specs if s.stage == "sft")
    evaluate = next(s for s in plan.specs if s.stage == "evaluate")
    started = time.time() - 3600
    result = TrainResult(examples=10, steps=2, final_loss=1.0, device="cpu", train_tokens=70)
    outcome = Outcome(sft.key, "sft", str(tmp_path), result, True, "node", 0.0,
                      started_at=started, ended_at=started + 600)
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {}, "plan")
    data_key = dict(sft.inputs)["data"]
    run_id = tracker.log_stage(sft, outcome, {}, [], {"data": "/store/teacher_generate/x"})
    eval_id = tracker.log_stage(evaluate, Outcome(evaluate.key, "evaluate", str(tmp_path),
                                                  {"wall_seconds": 1.0}, False, "node", 1.0), {}, [])

    run = tracker.client.get_run(run_id)
    assert run.info.start_time == int(started * 1000)
    assert run.info.end_time - run.info.start_time == 600_000
    (data,) = run.inputs.dataset_inputs            # the base model is not a dataset
    assert data.dataset.digest == data_key[:16] and "/store/teacher_generate/x" in data.dataset.source
    assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "training"
    (test_split,) = tracker.client.get_run(eval_id).inputs.dataset_inputs
    assert test_split.dataset.name == "arith test"
    assert {t.key: t.value for t in test_split.tags}["mlflow.data.context"] == "evaluation"
    # An outcome without times (older callers) is timed by MLflow, not at 1970.
    assert tracker.client.get_run(eval_id).info.start_time > started * 1000


def test_the_sweep_run_is_complete_on_its_own(tmp_path):
    """The parent run carries the code, libraries, note, resolved config and tables; a
    resumed sweep replaces results.json instead of appending to it."""
    import json
    import subprocess
    from importlib import metadata

    import pandas as pd

    from orchestrator.provenance import PROJECT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"experiment": {"name": "exp", "description": "why this sweep"},
              "grid": {"sizes": [10]}}
    results = tmp_path / "results.csv"
    results.write_text("data_type,n,seed,test_error\nteacher,10,0,0.5\nteacher,10,1,0.7\n")
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    parent = tracker.start_sweep("sweep-1", "exp", config, "plan")
    tracker.log_sweep_tables({"results": results})
    tracker.end_sweep("FINISHED")

    again = Tracker(uri, "exp", tmp_path / "artifacts")
    assert again.start_sweep("sweep-1", "exp", config, "plan") == parent
    results.write_text("data_type,n,seed,test_error\nteacher,10,0,0.5\nteacher,10,1,0.6\n"
                       "teacher,10,2,0.4\n")
    again.log_sweep_tables({"results": results})
    # (load_table itself searches the global tracking URI, not this client's store.)
    table = pd.read_json(again.client.download_artifacts(parent, "tables/results.json",
                                                         str(tmp_path)), orient="split")
    assert list(table["seed"]) == [0, 1, 2]               # not the 5 rows log_table appends

    tags = again.client.get_run(parent).data.tags
    assert {"path": "tables/results.json", "type": "table"} in json.loads(
        tags["mlflow.loggedArtifacts"])                # what the UI lists as a table
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True).stdout.strip()
    assert tags["mlflow.source.git.commit"] == head
    assert tags["versions.torch"] == metadata.version("torch")
    assert "versions.vllm" not in tags                # not installed here: absent, not "None"
    assert tags["mlflow.note.content"] == "why this sweep"
    logged = {f.path for f in again.client.list_artifacts(parent)}
    assert {"config.resolved.yaml", "config.json", "tables"} <= logged


def test_another_hosts_run_of_an_old_cached_stage_is_not_taken_for_abandoned(tmp_path):
    """A stage run starts when the stage did (days ago, for a cached stage): whether its
    logging was abandoned is judged by when the logging began (`logged_at`)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    days_ago = int((time.time() - 3 * 86400) * 1000)
    being_logged = tracker.client.create_run(tracker.experiment_id, start_time=days_ago, tags={
        "synthscale_kind": "stage", "cache_key": plan.specs[1].key,
        "logged_by": "gpu-node-7:1234", "logged_at": f"{time.time():.0f}"}).info.run_id
    Tracker(uri, "exp", tmp_path / "artifacts")
    assert tracker.client.get_run(being_logged).info.lifecycle_stage == "active"


def test_a_stage_run_names_the_versions_that_produced_its_artifact(tmp_path):
    """A cached stage logged by a later sweep carries its producer's library versions and
    commit (spec.json's provenance), not the logging process's."""
    import json

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    spec = plan.specs[1]
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "spec.json").write_text(json.dumps({"stage": spec.stage, "provenance": {
        "synthscale": "0.1.0", "libraries": {"torch": "2.11.0", "trl": "1.15.0"},
        "git_commit": "abc123"}}))
    outcome = Outcome(spec.key, spec.stage, str(folder), {"wall_seconds": 1.5}, True, "node", 0.0)
    tracker = Tracker(uri, "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {}, "plan")
    run_id = tracker.log_stage(spec, outcome, {}, [])
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["versions.torch"] == "2.11.0" and tags["versions.trl"] == "1.15.0"
    assert tags["mlflow.source.git.commit"] == "abc123" and tags["synthscale.version"] == "0.1.0"


def test_an_intermediate_stage_names_the_data_it_read():
    """Lineage: step_pairs reads rollouts, samples and the teacher data; each is an input."""
    from orchestrator.tracking import stage_datasets

    plan = expand_grid(config_from_dict({"grid": {"sizes": [10],
                                                  "data_types": ["sft_teacher", "dpo_per_step"]},
                                         "task": {"n_train": 100}}))
    pairs = next(s for s in plan.specs if s.stage == "step_pairs")
    found = stage_datasets(pairs, {})
    assert sorted(d.dataset.name for d in found) == ["data", "rollouts", "samples"]
    assert {d.dataset.digest for d in found} == {key[:16] for _, key in pairs.inputs}
    assert all({t.key: t.value for t in d.tags}["mlflow.data.context"] == "input" for d in found)
