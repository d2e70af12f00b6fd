"""Killed processes (issue 12): a Ray worker `kill -9`ed mid-stage is retried and the
sweep completes with each result once; a driver `kill -9`ed at two fixed points leaves no
MLflow run RUNNING (its reaper ends them) and resumes on re-run without redoing finished
stages or duplicating a result, its Ray dying with it."""

from __future__ import annotations

import signal
import time
import uuid

import pandas as pd
import psutil
import pytest

from .sweep_process import Sweep, assert_one_result_per_cell, ray_worker, stage_runs

STAGES = 4      # base_model, teacher_generate, sft, evaluate for one sft_teacher cell


@pytest.mark.slow
def test_a_worker_killed_mid_stage_is_retried_and_the_sweep_completes(tmp_path, mlflow_server):
    experiment = f"worker-kill-{uuid.uuid4().hex[:8]}"
    sweep = Sweep(tmp_path / "out", f"tracking.uri={mlflow_server}",
                  f"tracking.experiment={experiment}")
    worker = ray_worker(sweep, "ray::base_model[tiny]", timeout=120)
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


def _kill_driver_after(sweep: Sweep, needle: str) -> tuple[list, list, float]:
    """SIGKILL the sweep's own process as soon as it prints `needle`; returns the processes
    it had started (its local Ray, which must die with it, and its reaper), those of them
    that are reapers, and when it was killed."""
    sweep.wait_for(needle, timeout=300)
    started = sweep.descendants()
    reapers = [p for p in started if "orchestrator.reaper" in " ".join(_command(p))]
    sweep.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    sweep.process.wait(timeout=30)
    return started, reapers, killed_at


def _command(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:            # ended meanwhile
        return []


def _reaped(uri: str, experiment: str, timeout: float) -> list:
    """The experiment's runs once none is RUNNING (its killed driver's reaper ended them),
    or as they are after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        runs = stage_runs(uri, experiment, every=True)
        if not any(r.info.status == "RUNNING" for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def _still_alive(processes: list, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in processes if p.is_running() and p.status() != "zombie"]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


@pytest.mark.slow
def test_a_driver_killed_at_two_points_resumes_without_redoing_or_duplicating(
        tmp_path, mlflow_server):
    experiment = f"driver-kill-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    args = (f"tracking.uri={mlflow_server}", f"tracking.experiment={experiment}")
    texts, trashed = [], {}
    # Each point is right after a finished-stage line: the driver is then logging that stage
    # to MLflow, and after an evaluation, writing results.csv and per_problem.csv.
    for needle in ("] sft[n=100,seed=0] ", "] evaluate["):
        sweep = Sweep(out, *args)
        try:
            started, reapers, killed_at = _kill_driver_after(sweep, needle)
        finally:
            sweep.finish(timeout=30)
        texts.append(sweep.text)
        assert started, "the sweep started no Ray processes"
        assert len(reapers) == 1, [_command(p) for p in started]
        # The reaper, in a session of its own, ends what the driver left RUNNING, at once:
        # not only when (if ever) the sweep is run again
        runs = _reaped(mlflow_server, experiment, 30)
        print(f"killed after {needle!r}: runs ended in {time.monotonic() - killed_at:.1f} s")
        assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"], sweep.text
        (parent,) = [r for r in runs if r.data.tags.get("synthscale_kind") == "sweep"]
        assert parent.info.status == "KILLED" and parent.info.lifecycle_stage == "active"
        trashed.update((r.info.run_id, r) for r in runs if r.info.lifecycle_stage == "deleted")
        # Ray's fate sharing: its local processes do not outlive a SIGKILLed driver
        # (checked before Sweep.finish's end_group could clean up for it); nor does the
        # reaper outlive its work
        assert not _still_alive(started, 30), sweep.text
    sweep = Sweep(out, *args)
    code = sweep.finish(timeout=300)
    texts.append(sweep.text)
    assert code == 0, sweep.text[-3000:]
    assert f"{STAGES}/{STAGES} stages" in sweep.text and f"({STAGES} cached" in sweep.text.replace(
        f"0 run, {STAGES} cached", f"({STAGES} cached"), sweep.text
    # no stage computed twice across the attempts: a finished one is never redone (one that
    # finished in Ray just as its driver died is found cached by the next attempt)
    lines = [line for text in texts for line in text.splitlines()
             if line.startswith("[") and "/4] " in line and " on " in line]
    computed = [line.split("] ", 1)[1].split(" ")[0] for line in lines]
    assert len(computed) == len(set(computed)) and "base_model[tiny]" in computed, computed
    runs = stage_runs(mlflow_server, experiment)
    assert_one_result_per_cell(out, runs, STAGES)
    (parent,) = [r for r in runs if r.data.tags.get("synthscale_kind") == "sweep"]
    assert parent.info.status == "FINISHED" and parent.data.tags["attempts"] == "3"
    # the killed attempts' half-logged stage runs, if a kill landed while one was being
    # logged: ended KILLED and deleted by their reapers before the next attempt started,
    # never RUNNING. Whether a kill lands in that window is a race (on a loaded CI machine
    # both kills once missed it); tests/orchestrator/test_tracking.py cuts the logging
    # at fixed points instead, so that path is always tested.
    print(f"half-logged stage runs caught by the kills: {len(trashed)}")
    assert all(r.info.status == "KILLED" for r in trashed.values()), \
        [(r.info.run_name, r.info.status) for r in trashed.values()]
    every = stage_runs(mlflow_server, experiment, every=True)
    assert {r.info.run_id for r in every if r.info.lifecycle_stage == "deleted"} == set(trashed)
