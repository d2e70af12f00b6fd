"""Tracking server lost (issue 12): the MLflow server dies mid-sweep; the sweep keeps
computing, writes its tables and says MLflow is behind; with the server back (same port,
same store) the same command logs what was missing, each stage once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest

from orchestrator.processes import end_group, start_group

from ..conftest import ROOT, free_port, wait_until_healthy
from .sweep_process import Sweep, assert_one_result_per_cell, stage_runs

STAGES = 4


def _server(home, port: int):
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_STORE": str(home / "store"),
           "PYTHON": sys.executable, "MLFLOW_WORKERS": "1"}
    env.pop("MLFLOW_HOST", None)
    with (home / "server.log").open("a") as log:
        proc = start_group(["bash", str(ROOT / "cluster" / "mlflow-server.sh")], env=env,
                           stdout=log, stderr=subprocess.STDOUT, cwd=home)
    try:
        wait_until_healthy(proc, f"http://127.0.0.1:{port}", home / "server.log")
    except BaseException:
        end_group(proc, grace_s=0)
        raise
    return proc


@pytest.mark.slow
def test_the_tracking_server_dies_mid_sweep_and_the_next_run_catches_up(tmp_path):
    port, experiment = free_port(), f"server-lost-{uuid.uuid4().hex[:8]}"
    uri, out = f"http://127.0.0.1:{port}", tmp_path / "out"
    args = (f"tracking.uri={uri}", f"tracking.experiment={experiment}")
    server = _server(tmp_path, port)
    try:
        sweep = Sweep(out, *args)
        try:
            sweep.wait_for("[1/4] ", timeout=300)
        finally:
            end_group(server, grace_s=0)             # SIGKILL, the whole server group
        start = time.monotonic()
        code = sweep.finish(timeout=240)
        lost_seconds = time.monotonic() - start
    finally:
        end_group(server, grace_s=0)
    print(f"sweep after the server died: exit {code} in {lost_seconds:.0f} s")
    assert code == 1, sweep.text[-3000:]          # not ok: MLflow is behind
    assert "warning: MLflow logging stopped" in sweep.text and "a re-run logs what is missing" \
        in sweep.text, sweep.text
    assert f"{STAGES}/{STAGES} stages" in sweep.text           # every stage still computed
    assert len(pd.read_csv(out / "results.csv")) == 1
    server = _server(tmp_path, port)
    try:
        again = Sweep(out, *args)
        assert again.finish(timeout=300) == 0, again.text[-3000:]
        assert f"({STAGES} cached" in again.text.replace("0 run, ", "("), again.text
        runs = stage_runs(uri, experiment)
        assert_one_result_per_cell(out, runs, STAGES)
        cached = {r.info.run_name: r.data.tags["cached"] for r in runs
                  if r.data.tags.get("synthscale_kind") == "stage"}
        assert "true" in cached.values(), cached     # the missing ones, logged by the re-run
        print(f"logged by the re-run: {sorted(k for k, v in cached.items() if v == 'true')}")
    finally:
        end_group(server, grace_s=0)
