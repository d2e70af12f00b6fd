"""Two sweeps at once (issue 12): the same config and an overlapping one (a second seed),
started together on one artifact store and one MLflow server. Each stage is computed once
(the store's claim files make the later sweep wait and find it done), every published
artifact is whole, and each sweep's tables hold all its cells."""

from __future__ import annotations

import json
import uuid

import pandas as pd
import pytest

from .sweep_process import Sweep, stage_runs


@pytest.mark.slow
def test_two_sweeps_on_one_store_compute_each_stage_once(tmp_path, mlflow_server):
    experiment = f"two-sweeps-{uuid.uuid4().hex[:8]}"
    shared = (f"cluster.artifacts={tmp_path / 'store'}", f"tracking.uri={mlflow_server}",
              f"tracking.experiment={experiment}")
    first = Sweep(tmp_path / "a", *shared)
    second = Sweep(tmp_path / "b", *shared, "grid.seeds=[0,1]")
    codes = [first.finish(timeout=400), second.finish(timeout=400)]
    assert codes == [0, 0], first.text[-2000:] + second.text[-2000:]
    computed = [line.split("] ", 1)[1].split(" ")[0] for sweep in (first, second)
                for line in sweep.text.splitlines() if line.startswith("[") and " on " in line]
    assert len(computed) == len(set(computed)) == 6, computed      # 4 shared + sft, evaluate
    assert len(pd.read_csv(tmp_path / "a" / "results.csv")) == 1
    assert sorted(pd.read_csv(tmp_path / "b" / "results.csv")["seed"]) == [0, 1]
    folders = [f for f in (tmp_path / "store").glob("*/*") if f.is_dir()]
    assert len(folders) == 6 and not list((tmp_path / "store").glob("*/*.claim"))
    for folder in folders:
        assert (folder / "DONE").exists(), folder
        json.loads((folder / "result.json").read_text())
        json.loads((folder / "spec.json").read_text())
    runs = [r for r in stage_runs(mlflow_server, experiment)
            if r.data.tags.get("synthscale_kind") == "stage"]
    keys = [r.data.tags["cache_key"] for r in runs]
    assert len(keys) == len(set(keys)) == 6, sorted(r.info.run_name for r in runs)
