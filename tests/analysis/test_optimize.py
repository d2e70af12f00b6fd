"""The batched solvers agree with scipy on the problems they are used for."""

from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares, minimize
from scipy.special import huber

from analysis.optimize import least_squares_batched, minimize_batched
from analysis.power_law import bounds, law_residuals


def _quartic(x, rows, centres):
    """A smooth, non-quadratic bowl per problem: sum (x - c)^2 + 0.1 sum (x - c)^4."""
    d = x - centres[rows]
    return np.sum(d ** 2 + 0.1 * d ** 4, axis=1), 2 * d + 0.4 * d ** 3


def test_lbfgs_batch_finds_each_problems_own_minimum():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (200, 5))
    result = minimize_batched(lambda x, rows: _quartic(x, rows, centres), np.zeros((200, 5)))
    assert result.converged.all()
    np.testing.assert_allclose(result.x, centres, atol=1e-5)


def test_lbfgs_batch_matches_scipy_on_a_rosenbrock_batch():
    shifts = np.linspace(0.5, 2.0, 7)

    def rosen(x, rows):
        a = shifts[rows]
        f = (a - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2
        g = np.column_stack([-2 * (a - x[:, 0]) - 400 * x[:, 0] * (x[:, 1] - x[:, 0] ** 2),
                             200 * (x[:, 1] - x[:, 0] ** 2)])
        return f, g

    batch = minimize_batched(rosen, np.tile([-1.2, 1.0], (7, 1)), max_iter=5000)
    for i, a in enumerate(shifts):
        ref = minimize(lambda x, i=i: tuple(v[0] for v in rosen(x[None], np.array([i]))),
                       [-1.2, 1.0], jac=True, method="L-BFGS-B")
        np.testing.assert_allclose(batch.x[i], ref.x, atol=1e-4)
        np.testing.assert_allclose(batch.x[i], [a, a * a], atol=1e-4)


def test_bounded_huber_least_squares_matches_scipy_with_active_bounds():
    """Replicates of the 1-D law where the data favour E < 0 (held at 0) or E above the
    smallest error (held there): the projected LM must land where scipy's trf does."""
    rng = np.random.default_rng(1)
    log_n = np.log(np.repeat([100.0, 300, 1000, 3000, 10000], 2))
    floors = np.array([0.0, 0.05, 0.2])
    y = [np.log(f + 2.0 * np.exp(log_n) ** -0.4) + rng.normal(0, 0.08, log_n.size)
         for f in floors for _ in range(4)]
    log_err = np.array(y)
    lower, upper = bounds("offset", np.exp(log_err.min(axis=1)))
    x0 = np.tile([0.01, 0.5, 0.3], (len(y), 1))
    batch = least_squares_batched(lambda x, rows: law_residuals(x, log_n, log_err[rows]), x0,
                                  lower, upper, delta=0.1, max_iter=500)
    assert batch.converged.all()
    for i in range(len(y)):
        ref = least_squares(lambda x, i=i: law_residuals(x[None], log_n, log_err[i])[0][0],
                            x0[i], bounds=(lower[i], upper[i]), loss="huber", f_scale=0.1,
                            xtol=1e-14, ftol=1e-14, gtol=1e-14)
        ref_f = np.sum(huber(0.1, ref.fun))
        assert batch.fun[i] <= ref_f * (1 + 1e-7)
        np.testing.assert_allclose(batch.x[i], ref.x, atol=2e-3, rtol=2e-3)
    assert (batch.x[:, 0] >= lower[:, 0]).all() and (batch.x[:, 0] <= upper[:, 0]).all()
    assert (batch.x[:, 0] == 0).any(), "test data should push some E onto its lower bound"
