"""A stage that raises (issue 12): it fails its own cells, with a one-line reason in the
summary and as a FAILED MLflow run; the independent cell finishes; exit 1. With --fail-fast
the sweep stops at that failure instead: what was queued or running is cancelled, nothing is
published half-written, and a re-run resumes from what had finished.

The fault: the smoke grid's two cells, rft_self and dpo_negative, share the base model, the
teacher data, the SFT model and its samples; only rft_self's chain has an `rft_data` stage,
whose store folder is taken by a plain file. That stage raises as it starts, beside
dpo_negative's pairs, and before its DPO training and evaluation, which --fail-fast cancels.
(No config knob that loads cleanly makes one cell's early stage raise: a bad DPO setting
fails the last training, when nothing is left to cancel.)"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest

from orchestrator.processes import owner_is_gone
from orchestrator.store import OWNER

from ..conftest import ROOT, run_command
from .sweep_process import stage_runs

CELLS = ("grid.data_types=[rft_self,dpo_negative]", "grid.sizes=[100]", "task.n_test=20",
         "analysis.enabled=false")
FAILING = "rft_data[n=100,seed=0]"
INDEPENDENT = "evaluate[dpo_negative,n=100,seed=0]"
FINISHED_FIRST = ("base_model[tiny]", "teacher_generate[oracle,pool=100]", "sft[n=100,seed=0]",
                  "sample[n=100,seed=0]")
MAY_FINISH_FIRST = ("pairs[n=100,seed=0]", "dpo[dpo_negative,n=100,seed=0]")


def sweep(out: Path, *flags: str, blocked: bool = True, timeout: float = 240):
    """The smoke sweep of CELLS into `out`; `blocked`: its `rft_data` stage cannot create its
    folder."""
    if blocked:
        (out / "artifacts").mkdir(parents=True, exist_ok=True)
        (out / "artifacts" / "rft_data").touch()
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    start = time.monotonic()
    proc = run_command([sys.executable, "-m", "orchestrator", "sweep", "experiments/smoke.yaml",
                        f"experiment.output_dir={out}", *CELLS, *flags], timeout, cwd=ROOT, env=env)
    print(f"\nsweep {' '.join(flags)}: {time.monotonic() - start:.0f} s, exit {proc.returncode}")
    return proc


def failure_reason(stdout: str) -> str:
    """The one-line reason, as the progress line and the final report both give it."""
    found = re.findall(rf"FAILED {re.escape(FAILING)}: (.+)", stdout)
    assert len(found) == 2 and found[0] == found[1], stdout[-3000:]
    return found[0]


def mlflow_runs(out: Path) -> list:
    return stage_runs(f"sqlite:///{out / 'mlflow.db'}", "smoke")


def runs_of(runs: list, kind: str) -> list:
    return [r for r in runs if r.data.tags.get("synthscale_kind") == kind]


def finished_lines(stdout: str) -> set[str]:
    """Stage ids the progress display reported finished (run or cached)."""
    return {m.group(1) for m in re.finditer(r"^\[\d+/\d+\] (\S+) (?:cached|\d)", stdout, re.M)}


def published(store: Path) -> list[Path]:
    """The stage folders a reader may trust: the final (not dot-named) ones."""
    return [p for p in store.glob("*/*") if p.is_dir() and not p.name.startswith(".")]


def is_dead(leftover: Path) -> bool:
    """Whether a temporary folder or claim names a process of this host that has ended."""
    owner = leftover / OWNER if leftover.is_dir() else leftover
    try:
        tag = owner.read_text().strip()
        tag = json.loads(tag)["owner"] if leftover.is_dir() else tag
    except (OSError, ValueError, KeyError):
        return False
    return owner_is_gone(tag) is True


def leftovers(store: Path) -> list[str]:
    return sorted(str(p.relative_to(store)) for p in [*store.glob("*/.tmp-*"),
                                                       *store.glob("*/*.claim")])


@pytest.mark.slow
def test_a_failing_stage_fails_its_cell_and_is_a_failed_mlflow_run(tmp_path):
    proc = sweep(tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    reason = failure_reason(proc.stdout)
    assert "File exists" in reason and str(tmp_path / "artifacts" / "rft_data") in reason
    assert f"skipped evaluate[rft_self,n=100,seed=0] (upstream {FAILING} failed)" in proc.stdout
    assert INDEPENDENT in finished_lines(proc.stdout)
    assert "cancelled:" not in proc.stdout and "] cancelled " not in proc.stdout
    results = (tmp_path / "results.csv").read_text().splitlines()
    assert len(results) == 2 and results[1].startswith("smoke,dpo_negative,100,0,"), results

    runs = mlflow_runs(tmp_path)
    (failure,) = runs_of(runs, "failure")
    tags = failure.data.tags
    assert failure.info.status == "FAILED" and failure.info.run_name == FAILING
    assert tags["error"] == reason
    assert tags["stage"] == "rft_data" and tags["cells"] == "rft_self,n=100,seed=0"
    assert tags["n"] == "100" and tags["seed"] == "0" and tags["logged_by"]
    (parent,) = runs_of(runs, "sweep")
    assert tags["mlflow.parentRunId"] == parent.info.run_id
    assert parent.info.status == "FAILED"
    assert parent.data.tags["failed_stages"] == "1" and parent.data.tags["skipped_stages"] == "2"
    assert parent.data.tags["cancelled_stages"] == "0"
    # the failure run is not a stage run: the finished stages have one each, as ever
    assert sorted(r.info.run_name for r in runs_of(runs, "stage")) == sorted(
        [*FINISHED_FIRST, *MAY_FINISH_FIRST, INDEPENDENT])
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"


@pytest.mark.slow
def test_fail_fast_cancels_the_rest_and_a_rerun_resumes(tmp_path):
    proc = sweep(tmp_path, "--fail-fast")
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    reason = failure_reason(proc.stdout)
    (count,) = re.findall(rf"^cancelled: (\d+) stages? \(--fail-fast after FAILED "
                          rf"{re.escape(FAILING)}\)$", proc.stdout, re.M)
    assert f"cancelled {INDEPENDENT} (--fail-fast after FAILED {FAILING})" in proc.stdout
    # what finished before the failure stays; the evaluation after it never finished
    finished = finished_lines(proc.stdout)
    assert set(FINISHED_FIRST) <= finished <= {*FINISHED_FIRST, *MAY_FINISH_FIRST}, finished
    assert int(count) == 1 + len(set(MAY_FINISH_FIRST) - finished)
    store = tmp_path / "artifacts"
    assert "evaluate" not in {p.parent.name for p in published(store)}
    assert all((p / "DONE").exists() for p in published(store))
    assert (tmp_path / "results.csv").read_text().count("\n") == 1      # header only
    (store / "rft_data").unlink()           # the cause fixed (verify calls it foreign)
    verify = run_command([sys.executable, "-m", "orchestrator", "verify", store], 120, cwd=ROOT)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    runs = mlflow_runs(tmp_path)
    (failure,) = runs_of(runs, "failure")
    assert failure.info.status == "FAILED" and failure.data.tags["error"] == reason
    (parent,) = runs_of(runs, "sweep")
    assert parent.info.status == "FAILED" and parent.data.tags["cancelled_stages"] == count
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"

    done_at = {p: (p / "DONE").stat().st_mtime_ns for p in published(store)}
    before = leftovers(store)
    dead = [p for p in [*store.glob("*/.tmp-*"), *store.glob("*/*.claim")] if is_dead(p)]
    rerun = sweep(tmp_path, blocked=False)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert all(f"] {stage_id} cached" in rerun.stdout for stage_id in finished), rerun.stdout
    assert {p: (p / "DONE").stat().st_mtime_ns for p in done_at} == done_at   # not recomputed
    assert INDEPENDENT in finished_lines(rerun.stdout) and "cancelled:" not in rerun.stdout
    results = (tmp_path / "results.csv").read_text().splitlines()
    assert sorted(row.split(",")[1] for row in results[1:]) == ["dpo_negative", "rft_self"]
    # the killed attempts' temporary folders and claims (their workers gone) were cleaned
    assert not [p for p in dead if p.exists()], (dead, leftovers(store))
    print(f"killed attempts' leftovers: {before} after --fail-fast ({len(dead)} dead), "
          f"{leftovers(store)} after the re-run")
    runs = mlflow_runs(tmp_path)
    assert len(runs_of(runs, "failure")) == 1            # the first attempt's: history
    (parent,) = runs_of(runs, "sweep")
    assert parent.info.status == "FINISHED" and parent.data.tags["failed_stages"] == "0"
    assert parent.data.tags["cancelled_stages"] == "0"
    stage_keys = [r.data.tags["cache_key"] for r in runs_of(runs, "stage")]
    assert len(stage_keys) == len(set(stage_keys)) == 10    # each stage once, rft_data too
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
