"""The parts of `make gpu-check` a CPU can run: its models, its prompts, its weight-change
measurement, and a clear refusal where there is no GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_without_a_gpu_it_says_why_and_exits_2():
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    if gpu_check.preflight() is None:
        pytest.skip("this machine can run the GPU check")
    assert proc.returncode == 2
    assert proc.stderr.startswith("gpu-check: ") and proc.stderr.count("\n") == 1


def test_rollout_prompts_share_a_long_prefix():
    prompts = gpu_check.rollout_prompts(16)
    assert len(prompts) == 16 and len(set(prompts)) == 16
    header = prompts[0].split("Question:")[:-1]
    shared = "Question:".join(header)
    assert len(shared) > 2000 and all(p.startswith(shared) for p in prompts)


def test_the_weight_change_measure_sees_an_update(tmp_path):
    """On a CPU, a 5-step DPO at lr 1e-6 in fp32 moves most weights; the measure is what the
    GPU check compares between precisions."""
    model = tmp_path / "small"
    count = gpu_check.build_model(model, 64, 1, 128)
    assert count > 0 and (model / "tokenizer.json").exists()
    moved = gpu_check.weights_moved(model, "fp32", tmp_path, device="cpu")
    assert moved > 0.5
