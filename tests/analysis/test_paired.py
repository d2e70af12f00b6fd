"""The paired readout (analysis.paired): each row minus the baseline, seed by seed, per n,
with a bootstrap CI over seeds and test problems; checked against known truth."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.paired import paired_differences
from analysis.tables import load_per_problem, standardize


def _frames(make_sweep, rng_seed: int, **kwargs):
    results, per_problem = make_sweep(np.random.default_rng(rng_seed), **kwargs)
    frame = standardize(results)
    return frame, per_problem


def _per_problem(per_problem: pd.DataFrame, tmp_path) -> pd.DataFrame:
    path = tmp_path / "per_problem.csv"
    per_problem.to_csv(path, index=False)
    return load_per_problem(path)


def test_the_paired_difference_recovers_the_true_gap_within_its_ci(make_sweep, true_law,
                                                                     tmp_path):
    law_error, _, true_k = true_law
    frame, per_problem = _frames(make_sweep, 7, seeds=4, n_problems=2000, seed_sigma=0.02,
                                 true_k={"sft_teacher": 1.0, "dpo_per_step": 8.0})
    table, warnings = paired_differences(frame, "sft_teacher", _per_problem(per_problem, tmp_path),
                                         n_boot=400, seed=1)
    assert warnings == []
    assert set(table["group"]) == {"dpo_per_step"} and (table["seeds"] == 4).all()
    assert set(table["resampled"]) == {"seeds + test problems"}
    truth = law_error(table["n"], 8.0) - law_error(table["n"], 1.0)
    covered = (table["diff_lo"] <= truth) & (truth <= table["diff_hi"])
    assert covered.sum() >= len(table) - 1, table.assign(truth=truth)
    assert (table["diff_hi"] < 0).all()                 # an 8x gap is resolved at every n
    # the point estimate is exactly the mean of the seed-by-seed differences
    one = table.iloc[0]
    cells = frame[frame["cell_size"] == one["n"]].set_index(["group", "seed"])["error"]
    expected = (cells["dpo_per_step"] - cells["sft_teacher"]).mean()
    assert np.isclose(one["diff"], expected)


def test_no_difference_gives_a_ci_around_zero_and_more_seeds_narrow_it(make_sweep, tmp_path):
    widths = []
    for seeds in (2, 6):
        frame, per_problem = _frames(make_sweep, 11, seeds=seeds, n_problems=500,
                                     true_k={"sft_teacher": 1.0, "dpo_negative": 1.0})
        table, _ = paired_differences(frame, "sft_teacher",
                                      _per_problem(per_problem, tmp_path), n_boot=400)
        assert ((table["diff_lo"] <= 0) & (0 <= table["diff_hi"])).mean() >= 0.8, table
        widths.append((table["diff_hi"] - table["diff_lo"]).median())
    assert widths[1] < widths[0]


def test_only_seeds_present_on_both_sides_pair_and_gaps_are_said(make_sweep):
    frame, _ = _frames(make_sweep, 3, seeds=3, n_problems=200,
                       true_k={"sft_teacher": 1.0, "rft_self": 2.0})
    # the baseline lost seed 2 everywhere and all of n = 100; rft_self ran one seed at n = 200
    frame = frame[~((frame["group"] == "sft_teacher") & ((frame["seed"] == 2)
                                                          | (frame["cell_size"] == 100)))]
    frame = frame[~((frame["group"] == "rft_self") & (frame["cell_size"] == 200)
                    & (frame["seed"] > 0))]
    table, warnings = paired_differences(frame, "sft_teacher", None, n_boot=200)
    assert 100 not in set(table["n"])
    assert any("rft_self n=100: no seed of sft_teacher" in w for w in warnings)
    at_200 = table[table["n"] == 200].iloc[0]
    assert at_200["seeds"] == 1 and np.isnan(at_200["diff_lo"]) and at_200["resampled"] == "none"
    assert (table[table["n"] > 200]["seeds"] == 2).all()
    assert set(table[table["n"] > 200]["resampled"]) == {"seeds"}
    assert any("rest on one seed" in w for w in warnings)
