"""End to end on real components: local Ray, TRL training, an MLflow server on
127.0.0.1, real files. Checks the runs, metrics and results.csv, that a re-run
redoes nothing and duplicates nothing, and that an interrupted sweep resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.config import load_config
from orchestrator.planning import expand_grid
from orchestrator.processes import end_group, start_group

from ..conftest import ROOT, run_command

pytestmark = pytest.mark.slow
SMOKE = ROOT / "experiments" / "smoke.yaml"


def sweep_command(out, uri, name, *extra):
    return [sys.executable, "-m", "orchestrator", "sweep", str(SMOKE), f"experiment.output_dir={out}",
            f"tracking.uri={uri}", f"experiment.name={name}", *extra]


def run_sweep(out, uri, name, *extra):
    proc = run_command(sweep_command(out, uri, name, *extra), 600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def runs_of(uri, name):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_sweep_end_to_end_then_rerun_does_nothing(tmp_path, mlflow_server):
    out = tmp_path / "run"
    overrides = ("grid.seeds=[0,1]",)
    first = run_sweep(out, mlflow_server, "e2e", *overrides)
    plan = expand_grid(load_config(SMOKE, overrides))
    assert f"{len(plan.specs)}/{len(plan.specs)} stages" in first
    assert "test_error" in first and "results:" in first

    results = pd.read_csv(out / "results.csv")
    rows = {"sft_teacher", "rft_self", "dpo_negative", "dpo_per_step", "dpo_nll_only"}
    assert len(results) == len(plan.cells) == 5 * 2 * 2
    assert set(zip(results.data_type, results.n, results.seed, strict=True)) == {
        (d, n, s) for d in rows for n in (100, 200) for s in (0, 1)}
    assert results.test_error.between(0, 1).all()
    assert (results.test_error + results.pass_at_1 - 1).abs().max() < 1e-9
    assert (results.train_tokens > 0).all()
    # Only the self-generated rows sample from a model; the oracle teacher writes
    # its pool without one, and evaluation is not counted as a cell's cost.
    self_generated = results.data_type != "sft_teacher"
    assert (results.generated_tokens[self_generated] > 0).all()
    assert (results.generated_tokens[~self_generated] == 0).all()
    per_problem = pd.read_csv(out / "per_problem.csv")
    assert len(per_problem) == len(results) * 40
    check_artifacts(out, plan)

    client, runs = runs_of(mlflow_server, "e2e")
    stages = [r for r in runs if r.data.tags.get("synthscale_kind") == "stage"]
    sweeps = [r for r in runs if r.data.tags.get("synthscale_kind") == "sweep"]
    assert len(sweeps) == 1 and len(stages) == len(plan.specs)
    assert {r.data.tags["cache_key"] for r in stages} == {s.key for s in plan.specs}
    assert all(r.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id for r in stages)
    evals = [r for r in stages if r.data.tags["stage"] == "evaluate"]
    assert {r.data.tags["data_type"] for r in evals} == rows
    for run in evals:
        tags = run.data.tags
        row = results[(results.data_type == tags["data_type"]) & (results.n == int(tags["n"]))
                      & (results.seed == int(tags["seed"]))]
        assert run.data.metrics["test_error"] == pytest.approx(row.test_error.item())
        assert "wall_seconds" in run.data.metrics and "generated_tokens" in run.data.metrics
        assert run.data.params["task.name"] == "arith"
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["predictions.jsonl"]
    sft = [r for r in stages if r.data.tags["stage"] == "sft"]
    assert all(r.data.params["sft.epochs"] == "3.0" for r in sft)
    for run in sft:         # issue 14: Duration is the stage's own; its data is an input
        seconds = (run.info.end_time - run.info.start_time) / 1000
        assert seconds == pytest.approx(run.data.metrics["wall_seconds"], abs=0.01)
        data_key = dict(plan.get(run.data.tags["cache_key"]).inputs)["data"]
        assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [data_key[:16]]
    parent_tags = sweeps[0].data.tags
    assert parent_tags["mlflow.note.content"] == load_config(SMOKE).experiment.description
    assert "versions.torch" in parent_tags and "versions.trl" in parent_tags
    tables = {a.path for a in client.list_artifacts(sweeps[0].info.run_id, "tables")}
    assert {"tables/results.json", "tables/fits.json", "tables/multipliers.json"} <= tables
    dpo = [r for r in stages if r.data.tags["stage"] == "dpo"]
    assert {r.data.tags["data_type"] for r in dpo} == {"dpo_negative", "dpo_per_step",
                                                       "dpo_nll_only"}
    # issue 11: the per-step pits checked against the oracle's first wrong lines
    pit_check = pd.read_csv(out / "pit_check.csv")
    assert sorted(set(zip(pit_check.n, pit_check.seed, pit_check.k, strict=True))) == [
        (n, s, k) for n in (100, 200) for s in (0, 1) for k in (1, 2)]
    assert pit_check.precision.between(0, 1).all() and (pit_check.negatives > 0).all()
    assert "tables/pit_check.json" in tables and "tables/paired.json" in tables
    # ... and the training data: RFT's own positives and the outcome pairs, per n and seed
    data_check = pd.read_csv(out / "data_check.csv")
    assert set(data_check.stage) <= {"rft_data", "pairs"} and "pairs" in set(data_check.stage)
    assert data_check.valid.between(0, 1).all() and (data_check.rows > 0).all()
    assert "tables/data_check.json" in tables
    history = client.get_metric_history(sweeps[0].info.run_id, "pit_precision_k2")
    assert sorted(m.step for m in history) == [100, 200]
    assert all(r.data.params["dpo.beta"] == "0.1" and r.data.metrics["examples"] > 0 for r in dpo)
    rollouts = [r for r in stages if r.data.tags["stage"] == "rollouts"]
    assert all(r.data.params["rollouts"] == "2" and r.data.metrics["generated_tokens"] > 0
               for r in rollouts)

    check_mlflow_matches_results(mlflow_server, "e2e", results)
    # the sweep ended by fitting the curves and logging the fit to its own run
    assert (out / "analysis" / "fits.csv").exists() and (out / "analysis" / "curves.png").exists()
    logged = [a.path for a in client.list_artifacts(sweeps[0].info.run_id, "analysis")]
    assert "analysis/fits.csv" in logged and "analysis/multipliers.csv" in logged

    second = run_sweep(out, mlflow_server, "e2e", *overrides)
    assert f"(0 run, {len(plan.specs)} cached)" in second
    assert "ray: not started, every stage is cached" in second      # nothing to do costs nothing
    _, runs_after = runs_of(mlflow_server, "e2e")
    assert len(runs_after) == len(runs)
    assert pd.read_csv(out / "results.csv").equals(results)


def check_mlflow_matches_results(uri, name, results):
    """The analysis can read the same table (errors and chain costs) back from MLflow."""
    import mlflow

    from analysis import results_from_mlflow_runs

    mlflow.set_tracking_uri(uri)
    from_mlflow = results_from_mlflow_runs(mlflow.search_runs(experiment_names=[name]))
    merged = results.merge(from_mlflow, on=["data_type", "n", "seed"], suffixes=("", "_mlflow"))
    assert len(merged) == len(results)
    for column in ("test_error", "train_tokens", "generated_tokens", "device_seconds",
                   "eval_device_seconds"):
        assert merged[column].to_numpy() == pytest.approx(merged[f"{column}_mlflow"].to_numpy(),
                                                          rel=1e-6), column


def check_artifacts(out, plan):
    """Every stage left its files: trained models, samples, pairs, rollouts, predictions."""
    expected = {"sft": "model/config.json", "dpo": "model/config.json", "sample": "samples.jsonl",
                "rft_data": "data.jsonl", "pairs": "pairs.jsonl", "rollouts": "rollouts.jsonl",
                "step_pairs": "pairs.jsonl", "evaluate": "predictions.jsonl",
                "teacher_generate": "data.jsonl", "base_model": "model/config.json"}
    for spec in plan.specs:
        folder = out / "artifacts" / spec.stage / spec.key[:16]
        assert (folder / "DONE").exists(), spec.id
        assert (folder / expected[spec.stage]).stat().st_size > 0, spec.id
    rollouts = [pd.read_json(out / "artifacts" / "rollouts" / s.key[:16] / "rollouts.jsonl", lines=True)
                for s in plan.specs if s.stage == "rollouts"]
    for frame in rollouts:
        assert (frame["values"].map(len) == frame["steps"].map(len) + 1).all()


def test_interrupted_sweep_resumes_without_redoing_or_duplicating(tmp_path, mlflow_server):
    out = tmp_path / "run"
    proc = start_group(sweep_command(out, mlflow_server, "resume"), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    finished_before = []
    try:
        deadline = time.time() + 300
        for line in proc.stdout:
            if "] sft[" in line:
                finished_before.append(line.split("] ", 1)[1].split(" ")[0])
                proc.send_signal(signal.SIGINT)      # Ctrl-C after the first trained model
                break
            assert time.time() < deadline, "no stage finished in time"
        rest = proc.communicate(timeout=120)[0]
    finally:
        end_group(proc)
    assert proc.returncode == 130, rest
    assert "re-run the same command to resume" in rest
    results_partial = pd.read_csv(out / "results.csv") if (out / "results.csv").exists() else None
    done_before = {p: p.stat().st_mtime_ns for p in (out / "artifacts").glob("*/*/DONE")}
    assert done_before, "the interrupted run finished no stage"

    resumed = run_command(sweep_command(out, mlflow_server, "resume"), 600, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"{finished_before[0]} cached" in resumed.stdout
    plan = expand_grid(load_config(SMOKE))
    _, runs = runs_of(mlflow_server, "resume")
    stage_keys = [r.data.tags["cache_key"] for r in runs if r.data.tags.get("synthscale_kind") == "stage"]
    assert sorted(stage_keys) == sorted(s.key for s in plan.specs)       # each exactly once
    sweeps = [r for r in runs if r.data.tags.get("synthscale_kind") == "sweep"]
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert sweeps[0].data.tags["attempts"] == "2"
    final = pd.read_csv(out / "results.csv")
    assert len(final) == len(plan.cells)
    # finished stages were not redone: their artifacts are the ones published before
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
    if results_partial is not None:     # what the interrupted run reported stands unchanged
        merged = results_partial.merge(final, on=["data_type", "n", "seed"], suffixes=("", "_final"))
        assert len(merged) == len(results_partial)
        assert (merged["test_error"] == merged["test_error_final"]).all()
