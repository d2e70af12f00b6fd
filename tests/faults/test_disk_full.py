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


@pytest.fixture
def small_disk(tmp_path):
    folder = tmp_path / "store"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=640k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


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
