"""Bad configs through the real CLI (issue 12): every malformed YAML or override
ends with exit 2 and one line on stderr that names the file (and line) and the
field, before anything is computed, started or written.

Each case runs `python -m orchestrator plan FILE [overrides]` (a few run `sweep`)
in a subprocess whose working directory, TMPDIR and HOME are empty folders:
afterwards they must still hold nothing but the config (no runs/, no MLflow
store, no Ray session folder).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A bad config must be refused before Ray or MLflow start: well under Ray's few seconds.
MAX_SECONDS = 10.0


@dataclass(frozen=True)
class Case:
    name: str
    text: str | bytes                   # the YAML file (bytes: written as is)
    field: str                          # the field the message must name
    line: int | None = None             # the line it must name (None: no line applies)
    overrides: tuple[str, ...] = ()
    command: str = "plan"


DEEP = "a: " + "[" * 5000 + "]" * 5000 + "\n"
# "Billion laughs": ten levels of nine aliases each, 9**10 leaves if expanded.
ALIAS_BOMB = "grid:\n  sizes:\n    - &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"    - &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))

CASES = [
    # unknown keys at every level
    Case("unknown-section", "grd:\n  sizes: [100]\n", "grd", 1),
    Case("unknown-field", "grid:\n  sizes: [100]\n  size: 3\n", "grid.size", 3),
    Case("unknown-nested", "train:\n  sft:\n    epoch: 3\n", "train.sft.epoch", 3),
    Case("unknown-deepest", "cluster:\n  resources:\n    sft:\n      gpus: 1\n",
         "cluster.resources.sft.gpus", 4),
    Case("unknown-resource-group", "cluster:\n  resources:\n    trainer: {num_cpus: 1}\n",
         "cluster.resources.trainer", 3),
    Case("non-string-key", "1: 2\n", "1", 1),
    # wrong types
    Case("size-string", "grid:\n  sizes: [100, \"1k\"]\n", "grid.sizes[1]", 2),
    Case("epochs-word", "train:\n  sft:\n    epochs: three\n", "train.sft.epochs", 3),
    Case("bool-word", "tracking:\n  log_artifacts: maybe\n", "tracking.log_artifacts", 2),
    Case("section-is-list", "grid: [1, 2]\n", "grid", 1),
    Case("section-is-scalar", "train: fast\n", "train", 1),
    Case("int-is-float", "task:\n  n_test: 1.5\n", "task.n_test", 2),
    Case("list-is-scalar", "grid:\n  sizes: 100\n", "grid.sizes", 2),
    Case("float-is-nan", "train:\n  sft:\n    learning_rate: .nan\n", "train.sft.learning_rate", 3),
    Case("float-is-inf", "train:\n  sft:\n    epochs: 1e999\n", "train.sft.epochs", 3),
    Case("huge-value", "grid:\n  sizes: [\"" + "x" * 200_000 + "\"]\n", "grid.sizes[0]", 2),
    Case("top-level-list", "- grid\n- task\n", "<top level>", 1),
    # sizes and grid
    Case("negative-size", "grid:\n  sizes: [-100]\n", "grid.sizes[0]", 2),
    Case("zero-size", "grid:\n  sizes: [0, 100]\n", "grid.sizes[0]", 2),
    Case("duplicate-size", "grid:\n  sizes: [100, 100]\n", "grid.sizes[1]", 2),
    Case("empty-sizes", "grid:\n  sizes: []\n", "grid.sizes", 2),
    Case("empty-data-types", "grid:\n  data_types: []\n", "grid.data_types", 2),
    Case("duplicate-data-type", "grid:\n  data_types: [sft_teacher, sft_teacher]\n",
         "grid.data_types", 2),
    Case("duplicate-key", "grid:\n  sizes: [100]\ntask:\n  n_test: 5\ngrid:\n  seeds: [1]\n",
         "grid", 5),
    # unknown names and paths
    Case("unknown-data-type", "grid:\n  data_types: [sft_magic]\n", "grid.data_types[0]", 2),
    Case("unknown-task", "task:\n  name: gsm9k\n", "task.name", 2),
    Case("unresolvable-path", "task:\n  name: gsm8k\n  path: /nonexistent/gsm8k\n", "task.path", 3),
    # hostile YAML
    Case("python-apply-tag", "experiment:\n  name: !!python/object/apply:os.system ['touch pwned']\n",
         "experiment.name", 2),
    Case("python-name-tag", "grid:\n  sizes: !!python/name:os.system\n", "grid.sizes", 2),
    Case("non-utf8", b"experiment:\n  name: caf\xe9\n", "experiment.name", 2),
    Case("nul-byte", "experiment:\n  name: a\x00b\n", "experiment.name", 2),
    Case("bad-syntax", "grid:\n  sizes: [100,\n  seeds: [0]\n", "grid", None),
    Case("tab-indent", "grid:\n\tsizes: [100]\n", "grid", 2),
    Case("two-documents", "grid: {}\n---\ntask: {}\n", "<top level>", 2),
    Case("deep-nesting", DEEP, "a", 1),
    Case("alias-bomb", ALIAS_BOMB, "grid.sizes[0]", 3),
    Case("enormous", "# " + "x" * 100 + "\n" + "experiment: {name: big}\n" + "#" * (30 << 20) + "\n",
         "<top level>", None),
    # overrides
    Case("override-no-equals", "", "grid.sizes", None, ("grid.sizes",)),
    Case("override-unknown-key", "", "grid.sise", None, ("grid.sise=[1]",)),
    Case("override-wrong-type", "", "train.sft.epochs", None, ("train.sft.epochs=abc",)),
    Case("override-bad-yaml", "", "grid.sizes", None, ("grid.sizes=[1,",)),
    Case("override-into-scalar", "", "grid.sizes", None, ("grid.sizes.x=1",)),
    Case("override-through-value", "grid:\n  sizes: [100]\n", "grid.sizes.x", None,
         ("grid.sizes.x=1",)),
    Case("override-empty-key", "", "<empty key>", None, ("=5",)),
    Case("override-python-tag", "", "experiment.name", None,
         ("experiment.name=!!python/object/apply:os.system ['touch pwned']",)),
    # the same through `sweep`: refused before Ray or MLflow start
    Case("sweep-unknown-field", "grid:\n  sizes: [100]\n  size: 3\n", "grid.size", 3, (), "sweep"),
    Case("sweep-python-tag", "experiment:\n  name: !!python/object/apply:os.system ['touch pwned']\n",
         "experiment.name", 2, (), "sweep"),
    Case("sweep-override-no-equals", "", "grid.sizes", None, ("grid.sizes",), "sweep"),
    Case("sweep-empty-grid", "grid:\n  sizes: []\n", "grid.sizes", 2, (), "sweep"),
]


def test_at_least_thirty_cases():
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


def _run(case: Case, tmp_path: Path) -> tuple[subprocess.CompletedProcess, float, Path]:
    work, home, tmp = tmp_path / "work", tmp_path / "home", tmp_path / "tmp"
    for folder in (work, home, tmp):
        folder.mkdir()
    config = work / "exp.yaml"
    if isinstance(case.text, bytes):
        config.write_bytes(case.text)
    else:
        config.write_text(case.text)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT),
           "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "orchestrator", case.command, str(config),
                             *case.overrides], cwd=work, env=env, capture_output=True,
                            text=True, timeout=120)
    return result, time.monotonic() - start, config


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_config_exits_2_with_one_line(tmp_path, case):
    result, seconds, config = _run(case, tmp_path)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1, result.stderr[-2000:]
    line = lines[0]
    assert str(config) in line, line
    if case.line is not None:
        assert f"{config}:{case.line}:" in line, line
    if case.overrides:
        assert f"override '{case.overrides[0]}'" in line, line
    assert f" {case.field}" in line or f"{case.field}:" in line, line
    assert len(line) < 600, line       # a 200 kB value is not echoed whole
    assert seconds < MAX_SECONDS, f"took {seconds:.1f}s"
    assert result.stdout == ""
    # nothing computed, started or written: no runs/, MLflow store, Ray session, and no
    # `touch pwned` from a !!python tag
    assert sorted(p.name for p in config.parent.iterdir()) == ["exp.yaml"]
    assert not any((tmp_path / "tmp").iterdir()), list((tmp_path / "tmp").iterdir())
    assert not any((tmp_path / "home").iterdir()), list((tmp_path / "home").iterdir())
