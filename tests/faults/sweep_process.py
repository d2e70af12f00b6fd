"""A real sweep process for the fault tests: started in a process group of its own, its
output read line by line as it runs (so a test can strike at a known moment), and the MLflow
runs it left read back. Not a test module: imported by test_killed_processes.py and
test_tracking_lost.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from orchestrator.processes import end_group, start_group

from ..conftest import ROOT

SMALL = ("grid.data_types=[sft_teacher]", "grid.sizes=[100]", "task.n_test=20")


class Sweep:
    """`python -m orchestrator sweep experiments/smoke.yaml` with `overrides`, running."""

    def __init__(self, out: Path, *overrides: str):
        env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
        self.lines: list[str] = []
        self.process = start_group([sys.executable, "-m", "orchestrator", "sweep",
                                    "experiments/smoke.yaml", f"experiment.output_dir={out}",
                                    *SMALL, *overrides], cwd=ROOT, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        """Until a line containing `needle` was printed (fails if the sweep ends first)."""
        deadline = time.monotonic() + timeout
        while not any(needle in line for line in self.lines):
            assert self.process.poll() is None or self._reader.is_alive(), \
                f"sweep ended before printing {needle!r}:\n{self.text[-3000:]}"
            assert time.monotonic() < deadline, f"no {needle!r} in {timeout:.0f} s:\n{self.text}"
            time.sleep(0.05)

    def finish(self, timeout: float = 300) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            end_group(self.process)
        self._reader.join(timeout=10)
        return code

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def ray_worker(sweep: Sweep, title_prefix: str, timeout: float) -> psutil.Process:
    """The worker of `sweep`'s own local Ray (a descendant of its process, never another
    sweep's on this machine) whose process title (`ray::<stage id>`, set by Ray while it
    runs that task) starts with `title_prefix`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in sweep.descendants():
            try:
                cmdline = process.cmdline()
            except psutil.Error:            # ended meanwhile
                continue
            if cmdline and cmdline[0].startswith(title_prefix):
                return process
        time.sleep(0.1)
    raise AssertionError(f"no process titled {title_prefix}* within {timeout:.0f} s")


def stage_runs(uri: str, experiment: str, every: bool = False) -> list:
    """Every MLflow run of `experiment` (stage runs and the sweep's parent runs); with
    `every`, the deleted ones too."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment} at {uri}"
    view = ViewType.ALL if every else ViewType.ACTIVE_ONLY
    return client.search_runs([found.experiment_id], max_results=1000, run_view_type=view)


def assert_one_result_per_cell(out: Path, runs: list, stages: int, cells: int = 1) -> None:
    """results.csv and per_problem.csv hold each grid cell once; MLflow holds one FINISHED
    run per stage and no run left RUNNING."""
    import pandas as pd

    results = pd.read_csv(out / "results.csv")
    assert len(results) == cells and not results.duplicated(["data_type", "n", "seed"]).any()
    per_problem = pd.read_csv(out / "per_problem.csv")
    assert not per_problem.duplicated().any() and len(per_problem) > 0
    stage_runs_ = [r for r in runs if r.data.tags.get("synthscale_kind") == "stage"]
    keys = [r.data.tags["cache_key"] for r in stage_runs_]
    assert len(keys) == len(set(keys)) == stages, sorted(r.info.run_name for r in stage_runs_)
    assert all(r.info.status == "FINISHED" for r in stage_runs_)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
