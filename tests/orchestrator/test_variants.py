"""Variants never overwrite (issue 14): a sweep whose resolved config differs from the one
that produced a folder's results.csv writes to its own folder, named by its overrides, and
shares the artifact store; a config with nowhere of its own to go is refused."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from orchestrator.config import ConfigError, config_dict, load_config
from orchestrator.sweep import choose_output, run_sweep, variant_name

from ..conftest import ROOT, run_command

SMOKE = ROOT / "experiments" / "smoke.yaml"
SMALL = ("grid.data_types=[sft_teacher]", "grid.sizes=[100]")


def sweep(out: Path, *extra: str, env=None):
    command = [sys.executable, "-m", "orchestrator", "sweep", str(SMOKE),
               f"experiment.output_dir={out}", *SMALL, *extra]
    proc = run_command(command, 600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_a_variant_gets_its_own_folder_and_reuses_the_store(tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = sweep(out)
    assert "came from another config" not in first
    original = (out / "results.csv").read_bytes()
    assert pd.read_csv(out / "results.csv").n_test.tolist() == [40]

    # The variant's MLflow store comes from MLFLOW_TRACKING_URI (issue 14's other bullet).
    elsewhere = tmp_path / "elsewhere.db"
    env = {**_environ(monkeypatch), "MLFLOW_TRACKING_URI": f"sqlite:///{elsewhere}"}
    second = sweep(out, "task.n_test=20", env=env)
    variant = tmp_path / "run,grid.data_types=sft_teacher,grid.sizes=100,task.n_test=20"
    assert f"{out / 'results.csv'} came from another config (task.n_test: 40 there, 20 here)" \
        in second
    assert f"this variant writes to {variant}/" in second
    assert (out / "results.csv").read_bytes() == original            # never replaced
    assert pd.read_csv(variant / "results.csv").n_test.tolist() == [20]
    assert yaml.safe_load((variant / "config.resolved.yaml").read_text())["task"]["n_test"] == 20
    # one artifact store: only the evaluation ran again, in the original folder's store
    assert "(1 run, 3 cached)" in second and not (variant / "artifacts").exists()
    assert elsewhere.is_file() and not (variant / "mlflow.db").exists()

    again = sweep(out)                                   # the original config: its own folder
    assert "came from another config" not in again and "ray: not started" in again
    assert (out / "results.csv").read_bytes() == original

    # gc: keeping only the first folder, the variant's one evaluation is what it would free
    gc = run_command([sys.executable, "-m", "orchestrator", "gc", "--keep", str(out)], 120,
                     cwd=ROOT)
    assert gc.returncode == 0 and "4 artifacts kept" in gc.stdout, gc.stdout + gc.stderr
    assert "1 used by no kept plan" in gc.stdout and "\n  evaluate/" in gc.stdout
    both = run_command([sys.executable, "-m", "orchestrator", "gc", "--keep", str(out),
                        str(variant)], 120, cwd=ROOT)
    assert "5 artifacts kept" in both.stdout and "0 used by no kept plan" in both.stdout


def _environ(monkeypatch) -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def owned_folder(tmp_path: Path, *overrides: str) -> Path:
    """A folder whose results.csv came from smoke.yaml with `overrides` (no sweep run)."""
    out = tmp_path / "run"
    config = load_config(SMOKE, [f"experiment.output_dir={out}", *SMALL, *overrides])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.resolved.yaml").write_text(yaml.safe_dump(config_dict(config)))
    (out / "results.csv").write_text("data_type,n,seed,test_error\n")
    return out


def test_the_same_config_keeps_its_folder_whatever_runs_it(tmp_path):
    out = owned_folder(tmp_path)
    overrides = [f"experiment.output_dir={out}", *SMALL, "cluster.num_cpus=1",
                 "tracking.uri=sqlite:///x.db", "experiment.description=again"]
    config, note = choose_output(load_config(SMOKE, overrides), overrides)
    assert config.output_dir == out and note == ""


def test_a_changed_yaml_without_overrides_is_named_by_what_changed(tmp_path):
    out = owned_folder(tmp_path)
    changed = tmp_path / "changed.yaml"
    changed.write_text(SMOKE.read_text().replace("n_test: 40", "n_test: 30"))
    config, note = choose_output(load_config(changed, [f"experiment.output_dir={out}", *SMALL]))
    assert config.output_dir == tmp_path / "run,task.n_test"
    assert config.artifacts_dir == out / "artifacts"
    assert "task.n_test: 40 there, 30 here" in note


def test_a_variant_whose_own_folder_holds_another_config_is_refused(tmp_path):
    owned_folder(tmp_path)
    clash = tmp_path / "run,grid.data_types=sft_teacher,grid.sizes=100,task.n_test=20"
    clash.mkdir()
    clash_config = load_config(SMOKE, [f"experiment.output_dir={clash}", *SMALL, "task.n_test=20",
                                       "train.sft.epochs=1"])
    (clash / "config.resolved.yaml").write_text(yaml.safe_dump(config_dict(clash_config)))
    (clash / "results.csv").write_text("data_type,n,seed,test_error\n")
    overrides = [f"experiment.output_dir={tmp_path / 'run'}", *SMALL, "task.n_test=20"]
    with pytest.raises(ConfigError, match=r"came from another config too \(train.sft.epochs: 1.0 "
                                          r"there, 3.0 here\); set experiment.name"):
        choose_output(load_config(SMOKE, overrides), overrides)


def test_run_sweep_itself_never_replaces_another_configs_tables(tmp_path):
    out = owned_folder(tmp_path)
    before = (out / "config.resolved.yaml").read_text()
    config = load_config(SMOKE, [f"experiment.output_dir={out}", *SMALL, "grid.seeds=[3]"])
    with pytest.raises(ConfigError, match=r"results.csv came from another config \(grid.seeds"):
        run_sweep(config)
    assert (out / "config.resolved.yaml").read_text() == before


def test_variant_names_read_like_the_overrides():
    assert variant_name(["grid.sizes=[100, 200]", "experiment.name=x", "cluster.num_cpus=2",
                         "task.path=/data/gsm 8k", "eval.pass_k=4"], []) == \
        "eval.pass_k=4,grid.sizes=100+200,task.path=_data_gsm8k"
    assert variant_name([], ["train.sft.epochs", "grid.seeds"]) == "grid.seeds,train.sft.epochs"


def test_an_unreadable_record_of_the_folders_config_is_an_error_not_a_guess(tmp_path):
    out = owned_folder(tmp_path)
    (out / "config.resolved.yaml").write_text("- a list\n")
    overrides = [f"experiment.output_dir={out}", *SMALL]
    with pytest.raises(ConfigError, match=r"config.resolved.yaml: cannot read the config that "
                                          r"produced .*results.csv \(ValueError: not a mapping"):
        choose_output(load_config(SMOKE, overrides), overrides)
