"""Secrets (issue 12): with HF_TOKEN, OPENAI_API_KEY, MLFLOW_TRACKING_PASSWORD and
AWS_SECRET_ACCESS_KEY set to marker values, a real smoke sweep leaves none of
them anywhere: not in the MLflow store (params, tags, metrics and artifacts,
read as raw sqlite bytes), results, logs, the resolved config, the stage
artifacts, Ray's session logs, or the sweep's stdout/stderr. Neither does a
sweep that fails (a stage raising) or one refused for a bad config.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from ..conftest import ROOT, run_command

SECRET_VARS = ("HF_TOKEN", "OPENAI_API_KEY", "MLFLOW_TRACKING_PASSWORD", "AWS_SECRET_ACCESS_KEY")
RAY_TMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
SMALL = ("grid.data_types=[sft_teacher]", "grid.sizes=[100]")


def _markers() -> dict[str, str]:
    token = uuid.uuid4().hex
    return {name: f"SECRET-{name}-{token}" for name in SECRET_VARS}


def _ray_sessions() -> set[Path]:
    return set(RAY_TMP.glob("session_2*")) if RAY_TMP.is_dir() else set()


def _files_with(markers: dict[str, str], roots: list[Path]) -> list[str]:
    """Every (file, variable) where a marker's bytes occur, as text or UTF-16."""
    needles = {name: [v.encode(), v.encode("utf-16-le")] for name, v in markers.items()}
    hits, scanned = [], 0
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            try:
                data = path.read_bytes()
            except OSError:             # a socket or a file Ray removed meanwhile
                continue
            scanned += 1
            hits += [f"{path}: {name}" for name, forms in needles.items()
                     if any(form in data for form in forms)]
    assert scanned, f"nothing scanned under {roots}"
    return hits


def _sweep(tmp_path: Path, markers: dict[str, str], *overrides: str, timeout: float = 900):
    out = tmp_path / "out"
    env = {**os.environ, **markers, "MLFLOW_TRACKING_USERNAME": "someone"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    before = _ray_sessions()
    start = time.monotonic()
    proc = run_command([sys.executable, "-m", "orchestrator", "sweep", "experiments/smoke.yaml",
                        f"experiment.output_dir={out}", *overrides], timeout=timeout, cwd=ROOT,
                       env=env)
    seconds = time.monotonic() - start
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    (tmp_path / "stderr.txt").write_text(proc.stderr)
    return proc, out, sorted(_ray_sessions() - before), seconds


@pytest.mark.slow
def test_a_smoke_sweep_leaves_no_secret_anywhere(tmp_path):
    markers = _markers()
    proc, out, ray_sessions, seconds = _sweep(tmp_path, markers, *SMALL)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # the places a leak would land exist and were read
    assert (out / "mlflow.db").stat().st_size > 0
    assert (out / "results.csv").read_text().count("\n") >= 2
    assert any((out / "mlartifacts").rglob("*")) or any((out / "artifacts").rglob("*"))
    hits = _files_with(markers, [out, tmp_path / "stdout.txt", tmp_path / "stderr.txt",
                                 *ray_sessions])
    assert not hits, hits
    print(f"\nsmoke sweep with secrets set: {seconds:.0f}s, "
          f"{sum(1 for p in out.rglob('*') if p.is_file())} files under the output folder "
          f"and {len(ray_sessions)} Ray session(s) scanned, 0 markers found")


@pytest.mark.slow
def test_a_failing_stage_does_not_echo_secrets(tmp_path):
    # vLLM asked for on a fake GPU: the evaluate stage raises (no vLLM on this machine)
    gpu = [f"cluster.resources.{group}.num_gpus=1" for group in ("sample", "rollouts", "evaluate")]
    markers = _markers()
    proc, out, ray_sessions, _ = _sweep(tmp_path, markers, *SMALL, "generation.backend=vllm",
                                        "cluster.num_gpus=1", *gpu)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED evaluate[sft_teacher,n=100,seed=0]" in proc.stdout
    hits = _files_with(markers, [out, tmp_path / "stdout.txt", tmp_path / "stderr.txt",
                                 *ray_sessions])
    assert not hits, hits


def test_a_config_error_does_not_echo_secrets(tmp_path):
    markers = _markers()
    # the error names the field and value it rejects, never the environment
    proc, out, _, seconds = _sweep(tmp_path, markers, "grid.sizes=[-1]", "tracking.token=x",
                                   timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "grid.sizes[0]" in proc.stderr or "tracking.token" in proc.stderr
    assert not out.exists()
    hits = _files_with(markers, [tmp_path / "stdout.txt", tmp_path / "stderr.txt"])
    assert not hits, hits
