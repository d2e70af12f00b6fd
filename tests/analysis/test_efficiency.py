"""Efficiency multipliers: known k recovered, undefined and extrapolated cases flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.bootstrap import bootstrap_fit
from analysis.efficiency import (
    default_levels,
    multiplier_at_size,
    multiplier_warnings,
    multipliers_at_errors,
    multipliers_at_sizes,
    size_for_error,
)
from analysis.options import FitOptions
from analysis.power_law import PowerLawFit, fit_groups, fit_power_law, predict
from analysis.report import analyze
from analysis.tables import standardize


def _fit(group, e, a, alpha, n_min=100.0, n_max=3200.0):
    return PowerLawFit(group=group, form="offset", E=e, A=a, alpha=alpha, n_points=18, n_sizes=6,
                       n_min=n_min, n_max=n_max, err_min=e + a * n_max ** -alpha)


def test_size_for_error_inverts_the_law():
    params = np.array([0.1, 3.0, 0.5])
    n = np.array([10.0, 1e3, 1e6])
    np.testing.assert_allclose(size_for_error(params, predict(params, n)), n, rtol=1e-10)
    assert size_for_error(params, [0.1, 0.05]).tolist() == [np.inf, np.inf]


def test_exact_curves_give_exactly_the_constructed_k():
    base = np.array([0.1, 3.0, 0.5])
    for k in (0.5, 2.0, 8.0):
        group = np.array([0.1, 3.0 * k ** -0.5, 0.5])  # err_b(k n) written as a law in n
        np.testing.assert_allclose(multiplier_at_size(group, base, [100.0, 1e4]), k, rtol=1e-10)


def test_known_multipliers_are_recovered_from_a_noisy_sweep(make_sweep, true_law):
    """rft_self at 2x and dpo_per_step at 8x the baseline's data, 3 seeds, 600 problems.
    Where the baseline was observed at k n, k is within 20% of the truth (measured: 15%
    at most); everywhere, including extrapolations (k = 4.8 for a true 2 at n = 3200,
    where both curves are near the floor E), the CI covers the truth."""
    _, _, true_k = true_law
    results, per_problem = make_sweep(np.random.default_rng(42))
    frame = standardize(results)
    fits = fit_groups(frame)
    boot = bootstrap_fit(frame, fits, n_boot=500, seed=0, per_problem=per_problem.rename(
        columns={"data_type": "group", "n": "size"}))
    sizes = {g: np.unique(part["size"]) for g, part in frame.groupby("group")}
    table = multipliers_at_sizes(fits, "sft_teacher", sizes, boot)
    for group in ("rft_self", "dpo_per_step", "dpo_negative"):
        rows = table[table["group"] == group]
        observed = rows[~rows["extrapolated"]]
        assert len(observed) >= 2, rows
        assert np.all(np.abs(observed["k"] / true_k[group] - 1) < 0.2), rows
        assert np.all((rows["k_lo"] <= true_k[group]) & (true_k[group] <= rows["k_hi"])), rows
    per_step = table[table["group"] == "dpo_per_step"]
    assert per_step["extrapolated"].tolist() == list(per_step["baseline_n"] > 3200 * (1 + 1e-9))


def test_extrapolation_is_flagged_and_named_in_a_warning():
    base, group = _fit("sft_teacher", 0.1, 3.0, 0.5), _fit("dpo_per_step", 0.1, 3.0 / 8 ** 0.5, 0.5)
    fits = {"sft_teacher": base, "dpo_per_step": group}
    table = multipliers_at_sizes(fits, "sft_teacher", {"dpo_per_step": [100.0, 800.0, 1600.0]})
    assert table["k"].to_numpy() == pytest.approx(8.0)
    assert table["extrapolated"].tolist() == [False, True, True]  # 800 in range; 6400, 12800 not
    (warning,) = multiplier_warnings(table, fits)
    assert "n = 800, 1.6e+03" in warning and "[100, 3200]" in warning


def test_error_below_the_baseline_floor_gives_infinite_k_and_a_warning():
    base, group = _fit("sft_teacher", 0.2, 3.0, 0.5), _fit("better", 0.05, 3.0, 0.5)
    fits = {"sft_teacher": base, "better": group}
    table = multipliers_at_sizes(fits, "sft_teacher", {"better": [100.0, 3200.0]})
    assert np.isfinite(table["k"].iloc[0]) and np.isinf(table["k"].iloc[1])
    assert bool(table["extrapolated"].iloc[1])
    assert any("k is infinite" in w for w in multiplier_warnings(table, fits))


def test_levels_lie_in_both_observed_ranges_and_agree_with_k_at_size():
    base, group = _fit("sft_teacher", 0.1, 3.0, 0.5), _fit("rft_self", 0.1, 3.0 / 2 ** 0.5, 0.5)
    levels = default_levels(group, base)
    assert np.all((levels > base.predict(3200.0)) & (levels < group.predict(100.0)))
    table = multipliers_at_errors({"sft_teacher": base, "rft_self": group}, "sft_teacher")
    assert table["k"].to_numpy() == pytest.approx(2.0)
    assert not table["extrapolated"].any()


def test_an_unfitted_baseline_yields_nan_not_a_crash():
    base = fit_power_law([100.0, 100.0], [0.5, 0.5], group="sft_teacher")
    group = _fit("rft_self", 0.1, 2.0, 0.5)
    table = multipliers_at_sizes({"sft_teacher": base, "rft_self": group}, "sft_teacher",
                                 {"rft_self": [100.0]})
    assert np.isnan(table["k"]).all() and not table["extrapolated"].any()


def test_compute_axis_needs_several_sizes_not_seed_noise(make_sweep):
    results, _ = make_sweep(np.random.default_rng(5), seeds=2)
    extra = results[results.n == results.n.max()].assign(data_type="one_size")
    extra["train_tokens"] = extra["train_tokens"] * (1 + 0.1 * extra["seed"])   # seed noise
    report = analyze(standardize(pd.concat([results, extra], ignore_index=True)),
                     FitOptions(n_boot=0, cost_cols=("train_tokens",)))
    assert list(report.against_compute) == ["train_tokens"]
    compute = report.against_compute["train_tokens"].table
    assert "one_size" not in set(compute["group"]) and "sft_teacher" in set(compute["group"])
    assert any("against train_tokens: not fitted for one_size (measured at one size only)" in w
               for w in report.warnings)
