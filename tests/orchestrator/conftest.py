"""A finished artifact store of real stages, shared by the tests that read one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.config import Config, load_config
from orchestrator.planning import Plan, expand_grid
from orchestrator.store import ArtifactStore, run_cached

from ..conftest import ROOT

# The smoke world with two rows at three sizes: every size-dependent stage kind of those
# rows has three instances, so one size can be held out and predicted from the other two.
FINISHED_STORE_OVERRIDES = ("grid.sizes=[100,200,400]", "grid.data_types=[sft_teacher,rft_self]",
                            "model.pretrain_docs=500")


@dataclass(frozen=True)
class FinishedStore:
    root: Path
    config: Config
    plan: Plan


@pytest.fixture(scope="session")
def finished_store(tmp_path_factory) -> FinishedStore:
    """The plan of smoke.yaml + FINISHED_STORE_OVERRIDES, every stage run for real (TRL
    training, HF generation) in this process through store.run_cached, as a Ray worker
    runs it, with as many torch threads as CPUs the stage reserves (as the runner sets). About a minute
    on 2 idle cores."""
    root = tmp_path_factory.mktemp("finished-store") / "artifacts"
    config = load_config(ROOT / "experiments" / "smoke.yaml",
                         [*FINISHED_STORE_OVERRIDES, f"cluster.artifacts={root}"])
    plan = expand_grid(config)
    store = ArtifactStore(root)
    threads = os.environ.get("SYNTHSCALE_TORCH_THREADS")
    try:
        for spec in plan.specs:
            os.environ["SYNTHSCALE_TORCH_THREADS"] = str(max(1, int(spec.resources.num_cpus)))
            inputs = {name: str(store.path(plan.get(key).stage, key)) for name, key in spec.inputs}
            run_cached(store, spec, inputs)
    finally:
        if threads is None:
            os.environ.pop("SYNTHSCALE_TORCH_THREADS", None)
        else:
            os.environ["SYNTHSCALE_TORCH_THREADS"] = threads
    return FinishedStore(root, config, plan)
