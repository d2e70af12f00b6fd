"""Configs that compose (issue 14): `base:` files merged in order, then the file's own keys,
then overrides; errors still name the file and line a key came from."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.compose import differences
from orchestrator.config import ConfigError, config_dict, load_config

ROOT = Path(__file__).resolve().parents[2]

def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_demo_full_is_the_demo_plus_only_what_it_states():
    """demo_full.yaml composes on demo.yaml (`base:`) and shares its artifact store, so after
    `make sweep` only its own stages run: every other key must resolve to the demo's."""
    demo = config_dict(load_config(ROOT / "experiments" / "demo.yaml"))
    full = config_dict(load_config(ROOT / "experiments" / "demo_full.yaml"))
    assert {key for key, _, _ in differences(demo, full)} == {
        "experiment.name", "experiment.description", "cluster.artifacts", "per_step.early_stop",
        "per_step.rollouts", "grid.data_types"}
    assert full["cluster"]["artifacts"] == "runs/demo/artifacts"      # the demo's own store
    text = (ROOT / "experiments" / "demo_full.yaml").read_text()
    assert "base: demo.yaml" in text and len(text.splitlines()) < 30    # only what differs


def test_bases_merge_in_order_then_own_keys_then_overrides(tmp_path):
    write(tmp_path, "one.yaml", "grid:\n  sizes: [1, 2, 3]\n  seeds: [4]\ntask:\n  n_test: 11\n")
    write(tmp_path, "two.yaml", "grid:\n  sizes: [5]\ntask:\n  n_train: 77\n  n_test: 22\n")
    top = write(tmp_path, "top.yaml", "base: [one.yaml, two.yaml]\ntask:\n  n_test: 33\n")
    config = load_config(top, ["task.n_train=88"])
    # mappings merge key by key; a list replaces the base's list whole (OmegaConf's merge)
    assert config.grid.sizes == (5,) and config.grid.seeds == (4,)
    assert config.task.n_test == 33 and config.task.n_train == 88


def test_relative_bases_resolve_against_the_including_file(tmp_path, monkeypatch):
    write(tmp_path, "shared/root.yaml", "grid:\n  seeds: [7]\n")
    write(tmp_path, "shared/mid.yaml", "base: root.yaml\ntask:\n  n_test: 9\n")
    top = write(tmp_path, "exp/top.yaml", "base: ../shared/mid.yaml\n")
    monkeypatch.chdir(ROOT)
    config = load_config(top)
    assert config.grid.seeds == (7,) and config.task.n_test == 9


def test_an_error_in_a_base_key_names_the_base_file_and_line(tmp_path):
    base = write(tmp_path, "base.yaml", "task:\n  n_test: 5\ngrid:\n  sizes: [1, nope]\n")
    top = write(tmp_path, "top.yaml", "# header\nbase: base.yaml\ngrid:\n  seeds: [0]\n")
    with pytest.raises(ConfigError) as error:
        load_config(top)
    assert str(error.value) == f"{base}:4: grid.sizes[1]: expected int >= 1, got 'nope'"
    # a key the including file sets names the including file
    bad_top = write(tmp_path, "bad_top.yaml", "base: base.yaml\ngrid:\n  sizes: [1]\n"
                                              "  seeds: [x]\n")
    with pytest.raises(ConfigError, match=rf"^{bad_top}:4: grid.seeds\[0\]: expected int"):
        load_config(bad_top)


def test_a_cross_field_rule_names_the_file_of_the_offending_key(tmp_path):
    base = write(tmp_path, "base.yaml", "task:\n  min_steps: 5\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\ntask:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match=rf"^{base}:2: task.min_steps: expected <= "):
        load_config(top)


def test_a_shorter_list_forgets_the_base_lines_of_the_longer_one(tmp_path):
    write(tmp_path, "base.yaml", "grid:\n  sizes: [1, 2, 3]\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\n\n\ngrid:\n  sizes: [4, bad]\n")
    with pytest.raises(ConfigError, match=rf"^{top}:5: grid.sizes\[1\]"):
        load_config(top)


def test_an_override_of_a_base_key_is_named_as_the_override(tmp_path):
    write(tmp_path, "base.yaml", "grid:\n  sizes: [1]\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError, match=r"override 'grid.sizes=\[0\]': grid.sizes\[0\]: "):
        load_config(top, ["grid.sizes=[0]"])


def test_a_cycle_is_an_error(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    b = write(tmp_path, "b.yaml", "grid:\n  seeds: [1]\nbase: [a.yaml]\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "a.yaml")
    assert str(error.value).startswith(f"{b}:3: base[0]: a.yaml is already being included: a cycle")
    selfish = write(tmp_path, "self.yaml", "base: self.yaml\n")
    with pytest.raises(ConfigError, match=rf"^{selfish}:1: base: self.yaml .*cycle"):
        load_config(selfish)


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", "base: no such file: "),
    ("base: 3\n", "base: expected a file name or a list of file names, got 3"),
    ("base: [ok.yaml, {x: 1}]\n", "base: expected a file name or a list of file names"),
])
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, text, message):
    write(tmp_path, "ok.yaml", "")
    top = write(tmp_path, "top.yaml", "# about\n" + text)
    with pytest.raises(ConfigError) as error:
        load_config(top)
    assert str(error.value).startswith(f"{top}:2: ") and message in str(error.value)


def test_plan_prints_the_difference_from_the_defaults_and_errors_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan",
                           "experiments/demo_full.yaml", "grid.seeds=[3]"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    head = proc.stdout.split("\n\n")[0].splitlines()
    assert head[0].startswith("config (resolved; keys that differ from the defaults)")
    changed = {line.split(" = ")[0].strip(): line.split(" = ")[1] for line in head[1:]}
    assert changed["experiment.name"].startswith('"demo_full"')
    assert changed["task.max_value"].startswith("50 ")                 # from demo.yaml
    assert changed["grid.seeds"] == "[3]   (default [0])"               # from the override
    assert "task.n_train" not in changed                                # demo.yaml states the default
    base = write(tmp_path, "base.yaml", "grid:\n  sizes: [1, nope]\n")
    top = write(tmp_path, "top.yaml", "base: base.yaml\n")
    bad = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(top)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {base}:2: grid.sizes[1]: expected int >= 1, got 'nope'"
