"""The extrapolation backtest (analysis.backtest): the largest n predicted from the rest."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.backtest import backtest
from analysis.tables import Columns, standardize


def test_nmt_curves_backtest_as_measured_and_the_bands_mostly_miss(shared_data):
    """Bansal et al. 2022 NMT curves: each curve's largest size (512M examples) predicted
    from the rest. The relative errors are the ones test_power_law measured with the
    Training split (-6.2 % ... -1.7 %); the 95 % bands (one point per size: residual
    bootstrap) cover only TEnc-LSTM: the bands capture fit noise, not the law bending
    beyond the data, which is what the backtest is there to show."""
    data = pd.read_csv(shared_data / "nmt_bansal2022" / "benchmark.lang.NMT_rows.csv")
    frame = standardize(data, Columns(group="Model", size="Seen Examples", error="Loss",
                                      seed="seed"))
    table, warnings = backtest(frame, n_boot=400)
    errors = dict(zip(table["group"], table["rel_error"], strict=True))
    assert errors == pytest.approx({"28 Enc, 6 Dec": -0.062, "6 Enc, 28 Dec": -0.064,
                                    "6 Enc, 6 Dec": -0.055, "Dec-only": -0.037,
                                    "TEnc-LSTM": -0.017}, abs=0.003)
    assert (table["held_n"] == 512e6).all()
    assert list(table.loc[table["covered"] == True, "group"]) == ["TEnc-LSTM"]  # noqa: E712
    assert any("missed the observed error" in w for w in warnings)


def test_a_known_law_is_predicted_and_covered(make_sweep, true_law):
    law_error, _, _ = true_law
    results, per_problem = make_sweep(np.random.default_rng(5), seeds=3, n_problems=1000,
                                      true_k={"sft_teacher": 1.0})
    table, _ = backtest(standardize(results), n_boot=300)
    (row,) = table.itertuples(index=False)
    assert row.held_n == 3200 and row.fitted_sizes == 5
    assert abs(row.predicted / law_error(3200) - 1) < 0.15
    assert row.covered, row


def test_too_few_sizes_are_said_not_faked(make_sweep):
    results, _ = make_sweep(np.random.default_rng(1), sizes=(100, 200, 400), seeds=2,
                            n_problems=100, true_k={"sft_teacher": 1.0})
    table, warnings = backtest(standardize(results), n_boot=50)
    assert table.empty and "needs 3 sizes below the largest" in warnings[0]
