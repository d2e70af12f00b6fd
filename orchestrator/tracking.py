"""MLflow tracking: the only module that imports `mlflow`.

Layout: one MLflow experiment per experiment name; one parent run per sweep
(identified by a hash of its plan, so a resumed or repeated sweep reopens its
own parent run); one child run per stage, tagged `stage`, `data_type`, `n`,
`seed`, `cache_key`, `node`, `cached`, with the stage's resolved config slice as
params and its result as metrics.

A stage run spans the stage's real start and end (for a cached stage, those of the
run that produced it), so MLflow's Duration column is the stage's wall time. Its
training or test data are logged as dataset inputs whose digest is the data's cache
key (`key[:16]`, the store folder's name). The parent run is complete on its own,
even when a sweep extends an earlier one whose stage runs it does not repeat: the
resolved config, results.csv and the analysis' fits and multipliers as MLflow tables,
the git commit, library versions and `experiment.description` as its note.

Idempotent by cache key: before logging a stage, the experiment is searched for
a run with that `cache_key`; if one exists nothing is logged. A resumed sweep,
or one that shares stages with an earlier sweep, therefore never duplicates a
result, and a stage finished by a sweep that crashed before logging it is
logged by the next one (tagged `cached=true`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config_schema import to_dict
from orchestrator.contract import In
from orchestrator.planning import StageSpec
from orchestrator.processes import owner_is_gone, owner_tag
from orchestrator.provenance import code_version, git_commit, library_versions
from orchestrator.stages import STAGES
from orchestrator.store import SPEC, Outcome

# MLflow rejects longer param values (mlflow.utils.validation, 6000 in 3.x);
# keep well inside so a long prompt template never fails a sweep.
PARAM_VALUE_LIMIT = 500
# Some stores cut or reject tag values over 8000 characters (MLflow's SQL schema in 2.x): a
# failure's one-line reason (a long traceback line) is cut well inside that.
ERROR_TAG_LIMIT = 5000
BATCH = 100  # params/tags per log_batch call
ABANDONED_SECONDS = 600
DATA_INPUTS = (In.DATA, In.SAMPLES, In.ROLLOUTS, In.PAIRS)   # stage inputs that are datasets
# MLflow 3.x retries a failed request 7 times with backoff factor 2, 120 s timeout each: a
# dead server stalled a sweep for over 400 s per call (tests/faults/test_tracking_lost.py).
# A few seconds of retries ride out a blip; after that the sweep computes on, MLflow behind.
# Set in the environment, a user's own values win.
# A stage's runs; its failure runs (kind `failure`) share its cache_key tag but never count
# as the stage logged, nor as a rival in the race for its one run.
STAGE_RUNS = "tags.synthscale_kind = 'stage'"
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def _param_value(value: Any) -> str:
    return cut(json.dumps(value) if isinstance(value, (list, dict)) else str(value),
               PARAM_VALUE_LIMIT)


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 12] + "...[cut]"


def numeric_metrics(result: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_root: Path | str | None = None):
        from mlflow.tracking import MlflowClient

        for name, value in HTTP_RETRIES.items():
            os.environ.setdefault(name, value)
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.experiment_id = self._experiment(experiment, artifact_root)
        self.parent_id: str | None = None
        self.logged = self._logged_keys()

    def _experiment(self, name: str, artifact_root: Path | str | None) -> str:
        """The experiment's id, created if new, its artifacts at `artifact_root`: a folder,
        or a URL such as s3://bucket/mlflow (tracking.artifact_location; MLflow writes there
        itself, with boto3's credentials and MLFLOW_S3_ENDPOINT_URL)."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # With a local store, keep artifacts beside it instead of MLflow's ./mlruns default.
        location = (artifact_root if isinstance(artifact_root, str)
                    else artifact_root.resolve().as_uri() if artifact_root else None)
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except Exception:  # noqa: BLE001 - MlflowException, or the server's 'already exists'
            found = self.client.get_experiment_by_name(name)   # another sweep made it just now
            if found is None:
                raise
            return found.experiment_id

    def _search(self, filter_string: str) -> list:
        return search_all(self.client, self.experiment_id, filter_string)

    def _logged_keys(self) -> dict[str, str]:
        """cache_key -> run of every completely logged stage. A run left unfinished
        (its logging broke off) is deleted, so that this sweep logs it again whole:
        one whose logging process on this host has ended, or, for another host's,
        one unfinished for ABANDONED_SECONDS (logging a stage takes seconds)."""
        logged = {}
        abandoned_before = time.time() - ABANDONED_SECONDS
        for run in self._search(STAGE_RUNS):
            if run.info.status == "FINISHED":
                logged[run.data.tags["cache_key"]] = run.info.run_id
                continue
            gone = owner_is_gone(run.data.tags.get("logged_by", ""))
            # Not start_time: a stage run starts when the stage did, maybe days ago.
            began = float(run.data.tags.get("logged_at") or run.info.start_time / 1000)
            if gone or (gone is None and began < abandoned_before):
                self._discard(run.info.run_id)   # its logger was killed mid-way
        return logged

    # -- the sweep's parent run
    def start_sweep(self, sweep_id: str, name: str, config: dict[str, Any], plan_text: str) -> str:
        existing = self._search(f"tags.sweep_id = '{sweep_id}'")
        if existing:
            self.parent_id = existing[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            attempts = int(existing[0].data.tags.get("attempts", "1")) + 1
            self.client.set_tag(self.parent_id, "attempts", str(attempts))
        else:
            tags = {"sweep_id": sweep_id, "synthscale_kind": "sweep", "attempts": "1"}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
            self.parent_id = run.info.run_id
            self._log_params(self.parent_id, flatten(config))
            self.client.log_text(self.parent_id, json.dumps(config, indent=2), "config.json")
            self.client.log_text(self.parent_id, plan_text, "plan.txt")
        # Also on a resumed sweep: this attempt's code, libraries and placement, and its
        # driver, so that the reaper of a killed attempt never ends a later attempt's run.
        self._log_tags(self.parent_id, {**sweep_tags(config), "logged_by": owner_tag()})
        self.client.log_text(self.parent_id, yaml.safe_dump(config, sort_keys=False),
                             "config.resolved.yaml")
        return self.parent_id

    def log_sweep_tables(self, tables: dict[str, Path]) -> None:
        """CSV files as MLflow tables (`tables/<name>.json`, which the UI shows as tables).
        A resumed sweep replaces them: `MlflowClient.log_table` would append its rows to
        the ones already there (MLflow 3.17)."""
        import pandas as pd

        present = {f.path for f in self.client.list_artifacts(self.parent_id, "tables")}
        for name, path in tables.items():
            try:
                frame = pd.read_csv(path)
            except pd.errors.EmptyDataError:
                continue
            artifact = f"tables/{name}.json"
            if artifact not in present:
                self.client.log_table(self.parent_id, frame, artifact)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                # The file log_table writes (orient="split"), replacing the earlier one.
                frame.to_json(Path(tmp) / f"{name}.json", orient="split", index=False,
                              date_format="iso")
                self.client.log_artifact(self.parent_id, str(Path(tmp) / f"{name}.json"),
                                         "tables")

    def log_sweep_outcome(self, counts: dict[str, int]) -> None:
        """Tags `<what>_stages` = count on the sweep's run (failed, skipped, cancelled), set by
        every attempt: a resumed sweep that finishes shows 0 failed, its history the failure runs."""
        self._log_tags(self.parent_id, {f"{what}_stages": str(n) for what, n in counts.items()})

    def end_sweep(self, status: str) -> None:
        if self.parent_id:
            self.client.set_terminated(self.parent_id, status=status)

    def log_sweep_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """On the sweep's run; `step` lets a metric be a curve (e.g. against n)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()]
        self.client.log_batch(self.parent_id, metrics=items)

    def log_sweep_files(self, paths: list[Path], artifact_path: str | None = None) -> None:
        for path in paths:
            self.client.log_artifact(self.parent_id, str(path), artifact_path)

    # -- one child run per stage
    def log_stage(self, spec: StageSpec, outcome: Outcome, extra_metrics: dict[str, float],
                  artifacts: list[Path], input_dirs: dict[str, str] | None = None) -> str | None:
        """One child run for `spec` (none if one is logged already); `input_dirs` (input
        name -> upstream artifact folder) are the sources of its dataset inputs."""
        if spec.key in self.logged or self._logged_meanwhile(spec.key):
            return None
        tags = {"synthscale_kind": "stage", "stage": spec.stage, "cache_key": spec.key,
                "node": outcome.node, "node_id": outcome.node_id,
                "cached": str(outcome.cached).lower(),
                "pid": str(outcome.pid), "cuda_visible_devices": outcome.devices,
                "artifact_dir": outcome.artifact_dir, "mlflow.parentRunId": self.parent_id,
                "logged_by": owner_tag(), "logged_at": f"{time.time():.0f}", **spec.tag_dict,
                **provenance_tags(outcome.artifact_dir)}
        run = self.client.create_run(self.experiment_id, start_time=_millis(outcome.started_at),
                                     tags=tags, run_name=spec.id)
        run_id = run.info.run_id
        try:
            if self._lost_race(spec.key, run_id):
                self._discard(run_id)
                return None
            self._log_params(run_id, flatten(to_dict(spec.params)))
            self._log_metrics(run_id, {**to_dict(outcome.result), **extra_metrics},
                              getattr(outcome.result, "loss_curve", []))
            datasets = stage_datasets(spec, input_dirs or {})
            if datasets:
                self.client.log_inputs(run_id, datasets=datasets)
            for path in artifacts:
                self.client.log_artifact(run_id, str(path))
            self.client.set_terminated(run_id, status="FINISHED",
                                       end_time=_millis(outcome.ended_at))
        except BaseException:
            # Ctrl-C, SIGTERM or a failing server mid-way (even during the race check just
            # after create_run): a half-logged run would stand beside the whole one the next
            # sweep logs. Best effort: the server may be gone; then the next sweep's
            # _logged_keys removes it, its logger being gone.
            with contextlib.suppress(Exception):
                self._discard(run_id)
            raise
        self.logged[spec.key] = run_id
        return run_id

    # -- one child run per failure
    def log_failure(self, spec: StageSpec, error: str, cells: list[str]) -> str:
        """A FAILED child run for a stage that raised, named as the stage, with the reason as
        its `error` tag and the grid cells it takes down. Kind `failure`, not `stage`: a stage
        has one FINISHED run per cache key, and a later sweep that finishes it logs that run
        beside this one, which stays as history."""
        tags = {"synthscale_kind": "failure", "stage": spec.stage, "cache_key": spec.key,
                "error": cut(error, ERROR_TAG_LIMIT), "cells": cut(" ".join(cells), ERROR_TAG_LIMIT),
                "mlflow.parentRunId": self.parent_id, "logged_by": owner_tag(),
                "logged_at": f"{time.time():.0f}", **spec.tag_dict}
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=spec.id).info.run_id
        try:
            self._log_params(run_id, flatten(to_dict(spec.params)))
            self.client.set_terminated(run_id, status="FAILED")
        except BaseException:
            with contextlib.suppress(Exception):   # as in log_stage: never a half-logged run
                self._discard(run_id)
            raise
        return run_id

    def _discard(self, run_id: str) -> None:
        discard_run(self.client, run_id)

    def _log_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, tags=items[i:i + BATCH])

    def _logged_meanwhile(self, key: str) -> bool:
        """Whether another sweep sharing this store logged `key` since this one started, or
        is logging it now (two sweeps at once, tests/faults/test_concurrent_sweeps.py)."""
        for run in self._search(f"tags.cache_key = '{key}' and {STAGE_RUNS}"):
            if run.info.status == "FINISHED" or (
                    run.info.status == "RUNNING"
                    and not owner_is_gone(run.data.tags.get("logged_by", ""))):
                self.logged[key] = run.info.run_id
                return True
        return False

    def _lost_race(self, key: str, run_id: str) -> bool:
        """After creating `run_id`: whether another sweep created a run of `key` in the same
        instant and wins the tie (earliest start, then smallest run id): one run is kept."""
        runs = self._search(f"tags.cache_key = '{key}' and {STAGE_RUNS}")
        winner = min(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id), default=None)
        return winner is not None and winner.info.run_id != run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k[:250], _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), BATCH):
            self.client.log_batch(run_id, params=items[i:i + BATCH])

    def _log_metrics(self, run_id: str, metrics: dict[str, Any], curve: list) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in numeric_metrics(metrics).items()]
        items += [Metric("train_loss", float(loss), now, int(step)) for step, loss in curve
                  if math.isfinite(float(loss))]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])


def search_all(client, experiment_id: str, filter_string: str) -> list:
    """Every run of the experiment matching `filter_string`, all pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string,
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def discard_run(client, run_id: str) -> None:
    """End and delete a run no one will finish (a deleted run is still listed as RUNNING
    in the trash unless it is ended first)."""
    client.set_terminated(run_id, status="KILLED")
    client.delete_run(run_id)


def end_runs_of_dead_driver(uri: str, experiment_id: str, parent_id: str, owner: str) -> int:
    """After the sweep driver `owner` (its owner_tag) died without ending its runs (kill -9):
    its parent run ends KILLED, and every other run it left RUNNING (a half-logged stage
    run) is discarded, as the next attempt's _logged_keys would. Only runs still RUNNING
    under `owner`: a status the driver set, or a parent run a later attempt reopened, is
    left alone. Returns how many runs it ended."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ended = 0
    parent = client.get_run(parent_id)
    if parent.info.status == "RUNNING" and parent.data.tags.get("logged_by") == owner:
        client.set_terminated(parent_id, status="KILLED")
        ended += 1
    left = search_all(client, experiment_id,
                      f"tags.logged_by = '{owner}' and attributes.status = 'RUNNING'")
    for run in left:
        if run.info.run_id == parent_id:
            continue
        try:
            discard_run(client, run.info.run_id)
            ended += 1
        except Exception:  # noqa: BLE001 - a next attempt's _logged_keys may discard it too
            continue
    return ended


def _millis(epoch_seconds: float) -> int | None:
    """MLflow's milliseconds; None (MLflow's "now") for an outcome that carries no time."""
    return int(epoch_seconds * 1000) if epoch_seconds > 0 else None


def sweep_tags(config: dict[str, Any]) -> dict[str, str]:
    """What produced a sweep: MLflow's own git-commit and note tags, our versions."""
    tags = {"synthscale.version": code_version(),
            **{f"versions.{name}": v for name, v in library_versions().items()}}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    description = str(config.get("experiment", {}).get("description") or "")
    if description:
        tags["mlflow.note.content"] = description
    return tags


def provenance_tags(artifact_dir: str) -> dict[str, str]:
    """What produced a stage's artifact, from its spec.json (written where it ran; a cached
    stage keeps its producer's): library versions, the code version, the git commit."""
    try:
        recorded = json.loads((Path(artifact_dir) / SPEC).read_text()).get("provenance") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    tags = {f"versions.{name}": str(v) for name, v in (recorded.get("libraries") or {}).items()}
    if recorded.get("synthscale"):
        tags["synthscale.version"] = str(recorded["synthscale"])
    if recorded.get("git_commit"):
        tags["mlflow.source.git.commit"] = str(recorded["git_commit"])
    return tags


def stage_datasets(spec: StageSpec, input_dirs: dict[str, str]) -> list:
    """The dataset inputs of a stage run: the data artifacts it reads (its cache key as
    digest; context `training` for a training stage, else `input`: samples into rollouts,
    rollouts into step pairs, ...), and an evaluation's test split (digest: a hash of the
    task source and its size). A dataset's lineage can so be followed stage to stage."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    result_fields = {f.name for f in dataclasses.fields(STAGES[spec.stage].result_type)}
    context = "training" if "loss_curve" in result_fields else "input"
    found = []
    for name, key in spec.inputs:
        if name in DATA_INPUTS:
            uri = input_dirs.get(name, f"synthscale-artifact:{key}")
            dataset = Dataset(name, key[:16], "local", json.dumps({"uri": uri}))
            found.append(DatasetInput(dataset, [InputTag("mlflow.data.context", context),
                                                InputTag("cache_key", key)]))
    task, n_test = getattr(spec.params, "task", None), getattr(spec.params, "n_test", None)
    if task is not None and n_test is not None and spec.stage == "evaluate":
        source = json.dumps({**to_dict(task), "n_test": n_test}, sort_keys=True)
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        name = f"{getattr(task, 'name', 'task')} test"
        found.append(DatasetInput(Dataset(name, digest, "synthscale_task", source),
                                  [InputTag("mlflow.data.context", "evaluation")]))
    return found
