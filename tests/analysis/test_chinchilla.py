"""The 2-D law with Epoch AI's protocol: their published fit, their bootstrap, synthetic truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.chinchilla import (
    bootstrap_chinchilla,
    drop_highest_loss,
    epoch_grid,
    fit_chinchilla,
    lse_objective,
    predict_2d,
)

# Besiroglu et al. 2024 (arXiv 2404.10102), their Table: estimate (bootstrap SE).
PUBLISHED = {"E": (1.8172, 0.03), "A": (482.01, 124.58), "B": (2085.43, 1293.23),
             "alpha": (0.3478, 0.02), "beta": (0.3658, 0.02)}


@pytest.fixture(scope="module")
def epoch_points(shared_data) -> pd.DataFrame:
    raw = pd.read_csv(shared_data / "chinchilla_epoch" / "svg_extracted_data.csv")
    assert len(raw) == 245
    return pd.DataFrame({"N": raw["Model Size"], "D": raw["Training FLOP"] / (6 * raw["Model Size"]),
                         "loss": raw["loss"]})


@pytest.fixture(scope="module")
def epoch_fit(request):
    """(points kept, fit) of the headline 240-point fit, shared: a grid search is ~4 s."""
    points = request.getfixturevalue("epoch_points")
    kept = drop_highest_loss(points, 5)
    return kept, fit_chinchilla(kept)


def test_grid_is_epochs_4500_starts():
    grid = epoch_grid()
    assert grid.shape == (4500, 5)
    assert sorted(set(grid[:, 0])) == [0, 5, 10, 15, 20, 25]            # a
    assert sorted(set(grid[:, 2])) == [-1, -0.5, 0, 0.5, 1]             # e
    assert sorted(set(grid[:, 3])) == [0, 0.5, 1, 1.5, 2]               # alpha


def test_objective_is_a_sum_not_a_mean():
    theta = np.array([[6.0, 7.0, 0.5, 0.3, 0.3]])
    n, d, loss = np.array([1e8, 1e9]), np.array([1e10, 1e11]), np.array([3.0, 2.5])
    one, _ = lse_objective(theta, np.log(n), np.log(d), np.log(loss))
    two, _ = lse_objective(theta, np.log(np.tile(n, 2)), np.log(np.tile(d, 2)),
                           np.log(np.tile(loss, 2)))
    assert two[0] == pytest.approx(2 * one[0])


def test_reproduces_epochs_published_estimates(epoch_fit):
    """Their headline fit drops the 5 highest-loss points (240 kept; their repo's
    `nr_of_models_excluded = 5`). Measured here: E 1.8172, A 477.83, B 2143.4,
    alpha 0.34731, beta 0.36717 (sum of Huber 1.01827e-3, a true optimum: scipy BFGS,
    L-BFGS-B and Nelder-Mead polishing all agree). Their published values reach
    1.01864e-3, so they stopped marginally short; the gaps are 0.00, 0.03, 0.04, 0.02
    and 0.07 of their bootstrap SEs. Tolerance: 0.1 SE per parameter."""
    kept, fit = epoch_fit
    assert len(kept) == 240
    for name, (value, se) in PUBLISHED.items():
        assert abs(fit.params()[name] - value) < 0.1 * se, (name, fit.params()[name])
    assert fit.objective == pytest.approx(1.01827e-3, rel=1e-4)
    assert fit.r2_log > 0.99


def test_keeping_all_245_points_moves_the_data_exponent(epoch_points):
    """Why the drop matters (their 'with outliers' fit): measured B 12846, beta 0.453."""
    fit = fit_chinchilla(epoch_points)
    assert fit.n_points == 245
    assert fit.beta == pytest.approx(0.453, abs=0.005)
    assert fit.B > 5 * PUBLISHED["B"][0]


def test_bootstrap_standard_errors_match_the_published_ones(epoch_fit):
    """1,000 point resamples (they used 4,000), measured SEs: E 0.025, A 119, B 1411,
    alpha 0.015, beta 0.020, against published 0.03, 124.6, 1293, 0.02, 0.02.
    Tolerance: within a factor 1.6 either way."""
    kept, fit = epoch_fit
    bootstrap_chinchilla(fit, kept, n_boot=1000, seed=0)
    se = fit.boot.std(axis=0)
    for i, (name, (_, published_se)) in enumerate(PUBLISHED.items()):
        assert published_se / 1.6 < se[i] < published_se * 1.6, (name, se[i])
        lo, hi = fit.intervals()[name]
        assert lo < fit.params()[name] < hi


def test_synthetic_surface_is_recovered():
    """A grid of 7 model sizes x 8 token counts from a known law with 1% log noise: the
    fitted surface stays within 2% of the true one (measured 1.25% at worst)."""
    truth = {"E": 1.7, "A": 400.0, "B": 1500.0, "alpha": 0.34, "beta": 0.30}
    rng = np.random.default_rng(0)
    n, d = (v.ravel() for v in np.meshgrid(np.geomspace(1e7, 1e10, 7), np.geomspace(1e9, 1e12, 8)))
    loss = predict_2d(truth, n, d) * np.exp(rng.normal(0, 0.01, n.size))
    fit = fit_chinchilla(pd.DataFrame({"N": n, "D": d, "loss": loss}))
    est = fit.params()
    assert est["E"] == pytest.approx(truth["E"], rel=0.05)
    assert est["alpha"] == pytest.approx(truth["alpha"], abs=0.03)
    assert est["beta"] == pytest.approx(truth["beta"], abs=0.03)
    np.testing.assert_allclose(predict_2d(est, n, d), predict_2d(truth, n, d), rtol=0.02)
