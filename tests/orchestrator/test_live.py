"""Live curves (issue 15): refits logged to the sweep's MLflow run as cells finish,
throttled, with step = finished cells; on a real SQLite MLflow store and real results."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.config import config_from_dict
from orchestrator.live import LiveCurves
from orchestrator.tracking import Tracker


def _results(folder, sizes):
    """results.csv and per_problem.csv of a sweep whose rft_self is worth 2x sft_teacher."""
    import pandas as pd

    rng = np.random.default_rng(0)
    u = rng.random(200)
    rows, problems = [], []
    for data_type, k in (("sft_teacher", 1.0), ("rft_self", 2.0)):
        for n in sizes:
            for seed in (0, 1):
                p = (0.1 + 3.0 * (k * n) ** -0.5) * np.exp(rng.normal(0, 0.05))
                correct = (u > p).astype(int)
                rows.append({"data_type": data_type, "n": n, "seed": seed,
                             "test_error": 1 - correct.mean()})
                problems.append(pd.DataFrame({"data_type": data_type, "n": n, "seed": seed,
                                              "problem_id": range(200), "correct": correct}))
    pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
    pd.concat(problems).to_csv(folder / "per_problem.csv", index=False)
    return folder / "results.csv"


def test_fits_refresh_as_cells_finish_throttled_with_the_cell_count_as_step(tmp_path):
    config = config_from_dict({"experiment": {"output_dir": str(tmp_path / "out")},
                               "analysis": {"live_every_s": 30, "live_n_boot": 20}})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", tmp_path / "artifacts")
    tracker.start_sweep("sweep-1", "exp", {}, "plan")
    now = [0.0]
    live = LiveCurves(config, tracker, io.StringIO(), clock=lambda: now[0])
    (tmp_path / "few").mkdir()
    few = _results(tmp_path / "few", (100, 200))
    live.cell_finished(few, 4)          # two sizes: no law yet, but the paired readout
    assert live.refreshed == 1
    grown = _results(tmp_path, (100, 200, 400, 800))
    now[0] = 10.0
    live.cell_finished(grown, 12)       # within 30 s of the last refresh: throttled
    assert live.refreshed == 1
    now[0] = 45.0
    live.cell_finished(grown, 16)
    now[0] = 80.0
    live.cell_finished(grown, 16)
    assert live.refreshed == 3
    paired = tracker.client.get_metric_history(tracker.parent_id, "rft_self.paired_diff_at_max_n")
    assert [m.step for m in paired] == [4, 16, 16]
    k = tracker.client.get_metric_history(tracker.parent_id, "rft_self.k_at_max_n")
    assert [m.step for m in k][-2:] == [16, 16]
    live_files = {a.path for a in tracker.client.list_artifacts(tracker.parent_id, "live")}
    assert {"live/curves.png", "live/multipliers.png", "live/paired.png"} <= live_files
    assert (tmp_path / "out" / "analysis_live" / "fits.csv").exists()


def test_off_when_asked_and_a_failure_is_one_warning(tmp_path):
    stream = io.StringIO()
    off = LiveCurves(config_from_dict({"analysis": {"live_every_s": 0}}), object(), stream)
    assert not off.on
    config = config_from_dict({"experiment": {"output_dir": str(tmp_path / "out")},
                               "analysis": {"live_every_s": 1, "live_n_boot": 10}})
    broken = LiveCurves(config, object(), stream)     # a tracker without the methods
    broken.cell_finished(_results(tmp_path, (100, 200, 400, 800)), 16)
    assert not broken.on and "warning: live curves off" in stream.getvalue()
