"""Store hygiene (issue 14): `synthscale gc --keep CONFIG...` lists, then on --delete removes,
the artifact folders no kept plan references, and reports the bytes freed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import yaml

from orchestrator.config import config_dict, load_config
from orchestrator.planning import expand_grid
from orchestrator.store import OWNER, ArtifactStore

from ..conftest import ROOT

SMOKE = ROOT / "experiments" / "smoke.yaml"
SMALL = ["grid.data_types=[sft_teacher]", "grid.sizes=[100]"]


def finished(store: ArtifactStore, stage: str, key: str, size: int) -> Path:
    folder = store.path(stage, key)
    folder.mkdir(parents=True)
    (folder / "DONE").write_text("done\n")
    (folder / "data.jsonl").write_bytes(b"x" * size)
    return folder


def make_store(tmp_path: Path):
    """A store holding the smoke plan (kept), one evaluation of another config, a dead
    attempt and a running one; and a sweep folder naming the kept config."""
    out = tmp_path / "run"
    kept = load_config(SMOKE, [f"experiment.output_dir={out}", *SMALL])
    out.mkdir()
    (out / "config.resolved.yaml").write_text(yaml.safe_dump(config_dict(kept)))
    store = ArtifactStore(kept.artifacts_dir)
    kept_folders = [finished(store, s.stage, s.key, 100) for s in expand_grid(kept).specs]
    other = load_config(SMOKE, [f"experiment.output_dir={out}", *SMALL, "task.n_test=20"])
    evaluate = next(s for s in expand_grid(other).specs if s.stage == "evaluate")
    stale = finished(store, "evaluate", evaluate.key, 1000)
    dead = store.root / "sft" / ".tmp-0123456789abcdef-dead"
    dead.mkdir()
    (dead / OWNER).write_text(json.dumps({"owner": f"{socket.gethostname()}:999999999"}))
    (dead / "part").write_bytes(b"y" * 10)
    running = store.new_tmp("sft", "f" * 64)           # owned by this (living) process
    return out, kept_folders, [stale, dead], running


def synthscale(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator", "gc", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_dry_run_lists_and_deletes_nothing_then_delete_frees_the_bytes(tmp_path):
    out, kept, unused, running = make_store(tmp_path)
    dry = synthscale("--keep", out)
    assert dry.returncode == 0, dry.stderr
    assert f"{len(kept)} artifacts kept" in dry.stdout
    assert "2 used by no kept plan (1.0 KB)" in dry.stdout       # 1000 + 10 bytes
    assert "1 attempts still running (left alone)" in dry.stdout
    assert "dry run: deleting would free 1.0 KB" in dry.stdout
    assert all(p.exists() for p in kept + unused + [running])

    wet = synthscale("--keep", out, "--delete")
    assert wet.returncode == 0, wet.stderr
    assert "deleted 2 artifacts, freed 1.0 KB" in wet.stdout
    assert all(p.exists() for p in kept) and running.exists()
    assert not any(p.exists() for p in unused)
    again = synthscale("--keep", out)
    assert "0 used by no kept plan (0 B)" in again.stdout


def test_keeping_both_configs_keeps_both_plans(tmp_path):
    out, kept, (stale, dead), _ = make_store(tmp_path)
    variant = tmp_path / "variant.yaml"         # the other config, in the same store
    variant.write_text(f"base: {SMOKE}\nexperiment:\n  output_dir: {out}\ntask:\n  n_test: 20\n"
                       "grid:\n  data_types: [sft_teacher]\n  sizes: [100]\n")
    proc = synthscale("--keep", out, variant, "--delete")
    assert proc.returncode == 0, proc.stderr
    assert f"{len(kept) + 1} artifacts kept" in proc.stdout and "deleted 1 artifacts" in proc.stdout
    assert stale.exists() and all(p.exists() for p in kept) and not dead.exists()


def test_a_bad_keep_is_exit_2_with_one_line(tmp_path):
    proc = synthscale("--keep", tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: --keep {tmp_path}: a folder without " \
                                  "config.resolved.yaml (not a sweep folder)"
