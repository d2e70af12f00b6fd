"""The next best experiment (analysis.suggest), on synthetic curves with a known k = 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.power_law import fit_power_law
from analysis.suggest import Design, _aligned_sweep, cells_cost, simulated_log_widths, suggest

ROOT = Path(__file__).resolve().parents[2]
SIZES = (100, 200, 400, 800)
SPREAD = {"base": 0.03, "type": 0.03}


def law(n, k=1.0):
    return 0.1 + 3.0 * (k * np.asarray(n, float)) ** -0.5


def truth() -> dict:
    wide = np.array([1e2, 1e3, 1e4, 1e5])
    return {"base": fit_power_law(wide, law(wide), group="base"),
            "type": fit_power_law(wide, law(wide, 2.0), group="type")}


def pilot():
    """2 seeds at 4 sizes from the true laws; a cell costs 5 + 0.1 n device-seconds."""
    errors = {"base": law(SIZES), "type": law(SIZES, 2.0)}
    frame, _ = _aligned_sweep(Design(SIZES, 2, 2000), errors, SPREAD, (99, 0))
    frame["group"] = frame["group"].map({"base": "sft_teacher", "type": "rft_self"})
    frame["device_seconds"] = 5 + 0.1 * frame["cell_size"]
    return frame


@pytest.mark.slow
def test_following_the_suggestion_reaches_the_target_width_for_less_than_the_uniform_grid():
    """k at n = 800 needs the baseline at 1600, beyond the pilot: a larger size is what
    narrows its CI, more seeds barely do. The suggestion (ranked first, clear of the
    simulation noise) reaches a CI width of 2 (k_hi / k_lo) in the true world; no uniform
    grid (more seeds at every size) up to 8 seeds reaches it, though 8 seeds cost 3x more."""
    table, head, _ = suggest(pilot(), "sft_teacher", "rft_self", 2000, at_n=800, sims=12)
    first = table.iloc[0]
    assert first["candidate"] == "size up", table
    assert first["overrides"] == "grid.sizes=[100,200,400,800,1600]"
    assert first["width_gain"] - 2 * first["gain_se"] > 0
    target = 2.0
    world = truth()

    def true_width(design: Design) -> float:
        logs = simulated_log_widths(design, world, SPREAD, 800, sims=12, n_boot=100,
                                    level=0.95, seed=7)
        return float(np.exp(np.median(logs)))

    costs = {"base": np.array([5.0, 0.1]), "type": np.array([5.0, 0.1])}
    followed = Design((*SIZES, 1600), 2, 2000)
    spent = cells_cost(costs, followed.sizes, 2) - cells_cost(costs, SIZES, 2)
    assert spent == pytest.approx(first["added_device_seconds"])
    assert true_width(followed) <= target
    for seeds in (3, 4, 6, 8):
        uniform = Design(SIZES, seeds, 2000)
        cost = cells_cost(costs, SIZES, seeds) - cells_cost(costs, SIZES, 2)
        reached = true_width(uniform) <= target
        assert not reached or cost > spent, (seeds, cost, spent)
    assert cells_cost(costs, SIZES, 8) - cells_cost(costs, SIZES, 2) > 3 * spent


def test_the_command_line_ranks_and_prints_overrides(tmp_path):
    frame = pilot()
    results = tmp_path / "results.csv"
    frame.rename(columns={"group": "data_type", "cell_size": "n", "error": "test_error"}) \
        .drop(columns=["size"]).assign(n_test=2000).to_csv(results, index=False)
    done = subprocess.run([sys.executable, "-m", "orchestrator", "suggest", str(results),
                           "--group", "rft_self", "--at-n", "800", "--sims", "4",
                           "--n-boot", "30"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rft_self vs sft_teacher, k at n = 800" in done.stdout
    assert "grid.sizes=[100,200,400,800,1600]" in done.stdout and "task.n_test=4000" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "orchestrator", "suggest", str(results),
                          "--group", "nope"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().endswith("no rows of 'nope' in the results")


def test_more_test_problems_are_priced_from_the_evaluations_cost():
    """results.csv's eval_device_seconds prices the 'test problems' candidate: every cell
    of both groups evaluated again on twice the test set, at twice its evaluation's cost.
    Results without the column (older sweeps) leave it unpriced and unranked."""
    frame = pilot()
    frame["eval_device_seconds"] = np.where(frame["group"] == "rft_self", 3.0, 2.0)
    table, _, _ = suggest(frame, "sft_teacher", "rft_self", 2000, at_n=800, sims=3, n_boot=20)
    row = table.set_index("candidate").loc["test problems"]
    assert row["added_device_seconds"] == pytest.approx(2 * (3.0 + 2.0) * len(SIZES) * 2)
    seed = table.set_index("candidate").loc["seed"]       # a seed's cells include their evaluation
    assert seed["added_device_seconds"] == pytest.approx(sum(5 + 0.1 * n + 2.5 for n in SIZES) * 2)

    unpriced, _, _ = suggest(pilot(), "sft_teacher", "rft_self", 2000, at_n=800, sims=3,
                             n_boot=20)
    row = unpriced.set_index("candidate").loc["test problems"]
    assert np.isnan(row["added_device_seconds"]) and np.isnan(row["gain_per_device_hour"])
