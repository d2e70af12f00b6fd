"""Killed processes (issue 12): a Ray worker `kill -9`ed mid-stage is retried and the
sweep completes with each result once; a driver `kill -9`ed at fixed points resumes on
re-run without redoing finished stages or duplicating a result, its Ray dying with it."""

from __future__ import annotations

import signal
import time
import uuid

import pandas as pd
import pytest

from .sweep_process import Sweep, assert_one_result_per_cell, ray_worker, stage_runs

STAGES = 4      # base_model, teacher_generate, sft, evaluate for one sft_teacher cell


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_retried_and_the_sweep_completes(tmp_path, mlflow_server):
    experiment = f"worker-kill-{uuid.uuid4().hex[:8]}"
    sweep = Sweep(tmp_path / "out", f"tracking.uri={mlflow_server}",
                  f"tracking.experiment={experiment}")
    worker = ray_worker("ray::base_model[tiny]", timeout=120)
    time.sleep(3)                               # well inside its ~30 s of training
    assert worker.is_running()
    worker.send_signal(signal.SIGKILL)
    code = sweep.finish(timeout=400)
    assert code == 0, sweep.text[-3000:]
    assert "retried: base_model[tiny] finished on attempt 2" in sweep.text, sweep.text
    assert f"{STAGES}/{STAGES} stages" in sweep.text
    out = tmp_path / "out"
    assert_one_result_per_cell(out, stage_runs(mlflow_server, experiment), STAGES)
    # the dead attempt's half-written folder is gone, the published one is complete
    store = out / "artifacts" / "base_model"
    assert not list(store.glob(".tmp-*"))
    (published,) = list(store.iterdir())
    assert (published / "DONE").exists() and (published / "result.json").exists()
    results = pd.read_csv(out / "results.csv")
    assert results["test_error"].between(0, 1).all()
