"""Resume: re-running a finished smoke sweep (everything cached) against
running it the first time."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Ratio, timed

ROOT = Path(__file__).resolve().parents[1]


def _sweep(out: Path) -> None:
    subprocess.run([sys.executable, "-m", "orchestrator", "sweep", "experiments/smoke.yaml",
                    f"experiment.output_dir={out}", "analysis.enabled=false"],
                   cwd=ROOT, check=True, capture_output=True)


def run() -> Ratio:
    with tempfile.TemporaryDirectory() as tmp:
        first_s, _ = timed(lambda: _sweep(Path(tmp)))
        again_s, _ = timed(lambda: _sweep(Path(tmp)))
    return Ratio("resume", "first smoke sweep", "re-run (all stages cached)", first_s, again_s,
                 "includes Ray start-up and MLflow in both")
