"""experiments/study.yaml is pre-registered (docs/study.md) and has run: it must keep
resolving to the config that ran, whatever later changes do to the defaults or the demo."""
from pathlib import Path

import yaml

from orchestrator.config import config_dict, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_study_config_still_resolves_to_the_one_that_ran():
    ran = yaml.safe_load((ROOT / "tests/orchestrator/data/study.resolved.yaml").read_text())
    now = config_dict(load_config(ROOT / "experiments/study.yaml"))
    changed = sorted(f"{section}.{key}" for section in ran for key in ran[section]
                     if now.get(section, {}).get(key) != ran[section][key])
    assert not changed, (f"experiments/study.yaml no longer resolves to the config the study ran "
                         f"with: {changed}; pin the old values in it (the study runs once)")
