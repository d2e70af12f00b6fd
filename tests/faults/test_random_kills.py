"""The driver `kill -9`ed at random moments (issue 12): wherever the kill lands (starting
Ray, computing a stage, logging to MLflow, writing the tables), re-running the same command
finishes with each stage computed at most once to completion and each result once.

The moments come from a seed printed with the test (`FAULT_SEED=<seed>` replays them);
test_killed_processes.py strikes at the fixed moments that matter most."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid

import pytest

from .sweep_process import Sweep, assert_one_result_per_cell, stage_runs

STAGES = 4
ATTEMPTS = 3


def _finished_stages(text: str) -> list[str]:
    """Stage ids a sweep's output says it computed (not found cached)."""
    lines = [line for line in text.splitlines()
             if line.startswith("[") and f"/{STAGES}] " in line and " on " in line]
    return [line.split("] ", 1)[1].split(" ")[0] for line in lines]


def _wait_for_stage_line(sweep: Sweep, number: int) -> None:
    """Until the sweep printed its `number`-th stage line (or ended)."""
    deadline = time.monotonic() + 300
    while sum(line.startswith("[") and f"/{STAGES}] " in line for line in sweep.lines) < number:
        if sweep.process.poll() is not None or time.monotonic() > deadline:
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_a_driver_killed_at_random_moments_resumes_without_redoing_or_duplicating(
        tmp_path, mlflow_server):
    seed = int(os.environ.get("FAULT_SEED", random.randrange(1_000_000)))
    rng = random.Random(seed)
    experiment = f"random-kill-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    args = (f"tracking.uri={mlflow_server}", f"tracking.experiment={experiment}")
    texts, kills = [], []
    for _ in range(ATTEMPTS):
        # A random phase (after 0..4 stage lines: starting up, in the middle of a stage, or
        # logging and writing the tables after the last), then a random instant within it:
        # a plain random delay lands mostly in Ray's start-up on a loaded machine.
        after, delay = rng.randrange(STAGES + 1), rng.uniform(0.0, 4.0)
        sweep = Sweep(out, *args)
        try:
            if after:
                _wait_for_stage_line(sweep, after)
            time.sleep(delay)
            if sweep.process.poll() is None:
                sweep.process.send_signal(signal.SIGKILL)
                kills.append(f"{delay:.1f} s after stage line {after} (output line "
                             f"{len(sweep.lines)})")
        finally:
            code = sweep.finish(timeout=300)
        texts.append(sweep.text)
        if code == 0:
            break
    print(f"FAULT_SEED={seed}: killed {kills}")
    final = Sweep(out, *args)
    assert final.finish(timeout=300) == 0, f"FAULT_SEED={seed}\n{final.text[-3000:]}"
    texts.append(final.text)
    assert f"{STAGES}/{STAGES} stages" in final.text, final.text
    computed = [stage for text in texts for stage in _finished_stages(text)]
    assert len(computed) == len(set(computed)), f"FAULT_SEED={seed}: computed twice: {computed}"
    assert_one_result_per_cell(out, stage_runs(mlflow_server, experiment), STAGES)
    assert not list(out.glob(".*.tmp")), f"FAULT_SEED={seed}: a table's temporary file was left"
    store = out / "artifacts"
    assert not list(store.glob("*/.tmp-*")) and not list(store.glob("*/*.claim")), \
        f"FAULT_SEED={seed}: a dead attempt's folder or claim was left in the store"
