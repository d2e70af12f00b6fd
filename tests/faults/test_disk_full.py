"""Disk full (issue 12): the artifact store on a 640 kB tmpfs, which holds the teacher data but
not the base model's training output (its writes peak above that). The sweep warns about the free space before it
starts; the stage whose write fails stops with a message naming the store and the bytes;
nothing half-written is published and what was published stays whole."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ..conftest import ROOT, run_command
from .sweep_process import Sweep


def _mount_small(folder, size: str):
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    yield from _mount_small(tmp_path / "store", "640k")


@pytest.fixture
def small_output_disk(tmp_path):
    yield from _mount_small(tmp_path / "out", "4m")


def _fill(folder) -> None:
    """Write into `folder` until its disk is full."""
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


@pytest.mark.slow
def test_a_full_disk_stops_the_stage_cleanly_and_publishes_nothing_half_written(tmp_path,
                                                                                  small_disk):
    sweep = Sweep(tmp_path / "out", f"cluster.artifacts={small_disk}")
    code = sweep.finish(timeout=400)
    assert code == 1, sweep.text[-3000:]
    assert f"warning: {small_disk} has only " in sweep.text, sweep.text
    failed = [line for line in sweep.text.splitlines() if "FAILED base_model[tiny]" in line]
    assert failed and f"{small_disk}: disk full while base_model[tiny] was writing" in failed[0] \
        and "bytes written" in failed[0], sweep.text
    assert "skipped sft[" in sweep.text and "skipped evaluate[" in sweep.text
    left = list((small_disk / "base_model").iterdir())
    assert not left, f"a half-written base_model folder was left: {left}"
    verify = run_command([sys.executable, "-m", "orchestrator", "verify", str(small_disk)],
                         timeout=120, cwd=ROOT)
    assert verify.returncode == 0 and "1 finished stages checked, 0 broken" in verify.stdout, \
        verify.stdout + verify.stderr
    print(failed[0])


@pytest.mark.slow
def test_a_full_output_disk_fails_with_one_line_and_the_rerun_writes_the_tables(tmp_path,
                                                                                 small_output_disk):
    """The output folder (results.csv, per_problem.csv, MLflow's local artifacts) fills up
    mid-sweep; the artifact store and the MLflow database are elsewhere. The stages finish
    and stay cached, the tables are not written half, the sweep's MLflow run is not left
    RUNNING, and once space is freed the same command writes the tables without recomputing."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    out = small_output_disk
    args = (f"cluster.artifacts={tmp_path / 'store'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = Sweep(out, *args)
    sweep.wait_for("] teacher_generate[", timeout=300)
    _fill(out)
    code = sweep.finish(timeout=400)
    assert code == 1, sweep.text[-3000:]
    error = [line for line in sweep.text.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"{out}/results.csv: disk full while writing it" in error[0] \
        and "re-run the same command to resume" in error[0], sweep.text[-3000:]
    assert "Traceback" not in sweep.text
    assert not (out / "results.csv").exists() and not list(out.glob(".*.tmp")), \
        sorted(p.name for p in out.iterdir())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (out / "filler").unlink()
    again = Sweep(out, *args)
    assert again.finish(timeout=300) == 0, again.text[-3000:]
    assert "(0 run, 4 cached)" in again.text, again.text[-3000:]
    assert len(pd.read_csv(out / "results.csv")) == 1
    print(error[0])
