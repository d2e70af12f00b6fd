"""A sweep stopped by SIGTERM (what SLURM, Kubernetes and CI harnesses send) ends like
Ctrl-C: within a bounded time, exit 143, a line saying how to resume, its MLflow run not
left RUNNING, and nothing of the local Ray it started left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.processes import end_group, start_group

from ..conftest import ROOT

pytestmark = pytest.mark.slow


def test_sigterm_stops_the_sweep_and_its_local_ray(tmp_path):
    command = [sys.executable, "-m", "orchestrator", "sweep", "experiments/smoke.yaml",
               f"experiment.output_dir={tmp_path}", "grid.data_types=[sft_teacher]",
               "grid.sizes=[100]"]
    proc = start_group(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:        # the oracle pool is done, the base model is training
            if line.startswith("[1/") and "cached" not in line:
                break
            assert time.monotonic() < deadline, "no stage finished in time"
        ray_processes = psutil.Process(proc.pid).children(recursive=True)
        assert any("raylet" in " ".join(p.cmdline()) for p in ray_processes)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=120)[0]
        stopped_s = time.monotonic() - sent
    finally:
        end_group(proc)
    assert proc.returncode == 128 + signal.SIGTERM, rest
    assert "re-run the same command to resume" in rest
    assert stopped_s < 60
    gone_by = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ray_processes) \
            and time.monotonic() < gone_by:
        time.sleep(0.2)
    left = [p.pid for p in ray_processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], "processes of the sweep's local Ray outlived it"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert [r.info.status for r in runs if r.data.tags["synthscale_kind"] == "sweep"] == ["KILLED"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
