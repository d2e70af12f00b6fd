"""The 1-D law err(n) = E + A * n^(-alpha), fit per group in log space.

Objective: sum over points of Huber(log err_hat - log err), delta 0.1 by default:
quadratic for the few-percent scatter of seeds and test-set sampling, linear for
a diverged seed 2x off the curve, so one bad run cannot drag the exponent.
(Epoch's 2-D protocol uses delta = 1e-3, close to least absolute deviations; with
a handful of sizes per group that makes bootstrap distributions lumpy.)

Parameters theta = (E, log A, alpha) are bounded to be physical: 0 <= E <= the
smallest observed error (irreducible error cannot exceed what was achieved),
alpha in [1e-3, 5]. form="pure" fixes E = 0 (the law A * n^-alpha). The point
estimate is the best of several starts of scipy's bounded least squares with its
Huber loss; the bootstrap minimises the same objective (`law_residuals`, with the
fit's own delta) batched (analysis.bootstrap). Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares
from scipy.special import huber

FORMS = ("offset", "pure")
ALPHA_BOUNDS = (1e-3, 5.0)
LOG_A_BOUNDS = (-50.0, 50.0)
DEFAULT_DELTA = 0.1


@dataclass(kw_only=True)
class PowerLawFit:
    """One group's fit. Parameters are NaN when the group has too few sizes to fit."""

    group: str
    form: str
    E: float
    A: float
    alpha: float
    n_points: int
    n_sizes: int
    n_min: float
    n_max: float
    err_min: float
    rmse_log: float = float("nan")
    r2_log: float = float("nan")
    objective: float = float("nan")  # sum of huber(delta, log residual) at the optimum
    delta: float = DEFAULT_DELTA
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(np.isfinite([self.E, self.A, self.alpha]).all())

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.E, np.log(self.A), self.alpha])

    def predict(self, n) -> np.ndarray:
        return predict(np.array([self.E, self.A, self.alpha]), n)


def predict(params: np.ndarray, n) -> np.ndarray:
    """err(n) for params (E, A, alpha) of shape [3] or [k, 3]; returns [len(n)] or [k, len(n)]."""
    p = np.asarray(params, float)
    n = np.asarray(n, float)
    if p.ndim == 1:
        return p[0] + p[1] * n ** -p[2]
    return p[:, :1] + p[:, 1:2] * n[None, :] ** -p[:, 2:3]


def bounds(form: str, err_min) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds for theta (E, log A, alpha); err_min may be an array [k]."""
    err_min = np.atleast_1d(np.asarray(err_min, float))
    zeros = np.zeros_like(err_min)
    e_hi = zeros if form == "pure" else err_min
    lower = np.stack([zeros, zeros + LOG_A_BOUNDS[0], zeros + ALPHA_BOUNDS[0]], -1)
    upper = np.stack([e_hi, zeros + LOG_A_BOUNDS[1], zeros + ALPHA_BOUNDS[1]], -1)
    return lower, upper


def starts(form: str, log_n: np.ndarray, err: np.ndarray, delta: float = DEFAULT_DELTA,
           count: int = 4) -> np.ndarray:
    """The `count` best points of a grid over alpha x E (log A by least squares given both),
    ranked by the objective: cheap to score, so the scipy starts begin near the optimum."""
    e_share = [0.0] if form == "pure" else [0.0, 0.2, 0.4, 0.6, 0.8, 0.95]
    grid = np.array(list(itertools.product(np.geomspace(0.05, 3.0, 16), e_share)))
    alpha, e = grid[:, 0], grid[:, 1] * err.min()
    a = np.mean(np.log(np.maximum(err[None, :] - e[:, None], 1e-12)), axis=1) + alpha * log_n.mean()
    theta = np.column_stack([e, np.clip(a, *LOG_A_BOUNDS), alpha])
    r, _ = law_residuals(theta, log_n, np.log(err))
    order = np.argsort(np.sum(huber(delta, r), axis=1))
    return theta[order[:count]]


def law_residuals(theta, log_n, log_err):
    """Log residuals [k, m] and their Jacobian [k, m, 3] for parameters theta[k, 3]."""
    power = np.exp(theta[:, 1:2] - theta[:, 2:3] * log_n)
    pred = theta[:, :1] + power
    r = np.log(pred) - log_err
    jac = np.stack(np.broadcast_arrays(1 / pred, power / pred, -power * log_n / pred), axis=-1)
    return r, jac


def _minimize_one(theta0, log_n, log_err, lower, upper, delta):
    """scipy's trust-region least squares with its Huber loss: with f_scale = delta its
    cost is exactly sum(huber(r, delta)), the objective the bootstrap batches."""
    free = lower < upper  # least_squares rejects lower == upper: fixed E of the pure law
    fixed = theta0.copy()

    def full(x):
        fixed[free] = x
        return fixed

    res = least_squares(lambda x: law_residuals(full(x)[None], log_n, log_err)[0][0],
                        theta0[free],
                        jac=lambda x: law_residuals(full(x)[None], log_n, log_err)[1][0][:, free],
                        bounds=(lower[free], upper[free]), loss="huber", f_scale=delta,
                        method="trf", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return full(res.x).copy(), float(np.sum(huber(delta, res.fun)))


def _goodness(theta, log_n, log_err) -> tuple[float, float]:
    resid = log_err - np.log(theta[0] + np.exp(theta[1] - theta[2] * log_n))
    ss_tot = np.sum((log_err - log_err.mean()) ** 2)
    r2 = 1 - np.sum(resid ** 2) / ss_tot if ss_tot > 0 else float("nan")
    return float(np.sqrt(np.mean(resid ** 2))), float(r2)


def _identification_warnings(fit: PowerLawFit) -> list[str]:
    out, name = [], fit.group
    n_params = 3 if fit.form == "offset" else 2
    if fit.n_sizes <= n_params:
        out.append(f"{name}: only {fit.n_sizes} sizes for {n_params} parameters; the fit "
                   "passes through the points and is poorly identified")
    if fit.form == "offset" and fit.E <= 1e-3 * fit.err_min:
        out.append(f"{name}: E at its lower bound 0 (no error floor visible in the data)")
    if fit.form == "offset" and fit.E >= (1 - 1e-3) * fit.err_min:
        out.append(f"{name}: E at its upper bound (the smallest observed error, "
                   f"{fit.err_min:.4g}): error stops falling within the observed sizes")
    if not ALPHA_BOUNDS[0] * 1.01 < fit.alpha < ALPHA_BOUNDS[1] * 0.99:
        out.append(f"{name}: alpha at a bound ({fit.alpha:.3g}); the decay is not resolved")
    return out


def _empty_fit(group, form, size, err, delta) -> PowerLawFit:
    nan = float("nan")
    n_sizes = len(np.unique(size))
    return PowerLawFit(group=group, form=form, E=nan, A=nan, alpha=nan, n_points=len(size),
                       n_sizes=n_sizes, n_min=float(np.min(size)) if len(size) else nan,
                       n_max=float(np.max(size)) if len(size) else nan,
                       err_min=float(np.min(err)) if len(err) else nan, delta=delta,
                       warnings=[f"{group}: {n_sizes} distinct size(s); a power law needs "
                                 "at least 2"])


def fit_power_law(size, error, *, form: str = "offset", delta: float = DEFAULT_DELTA,
                  group: str = "") -> PowerLawFit:
    """Fit err = E + A n^-alpha (form "offset") or A n^-alpha ("pure") to arrays of points.

    With fewer than 3 distinct sizes the offset law is not identified: the pure
    law is fitted instead (with a warning); with fewer than 2, nothing is fitted.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    size, err = np.asarray(size, float), np.asarray(error, float)
    n_sizes = len(np.unique(size))
    if n_sizes < 2:
        return _empty_fit(group, form, size, err, delta)
    notes = []
    if form == "offset" and n_sizes < 3:
        notes.append(f"{group}: only {n_sizes} sizes; fitted the pure law A*n^-alpha instead "
                     "of E + A*n^-alpha (E is not identified)")
        form = "pure"
    log_n, log_err = np.log(size), np.log(err)
    lower, upper = (b[0] for b in bounds(form, err.min()))
    best = min((_minimize_one(np.clip(x0, lower, upper), log_n, log_err, lower, upper, delta)
                for x0 in starts(form, log_n, err, delta)), key=lambda t: t[1])
    theta, objective = best
    rmse, r2 = _goodness(theta, log_n, log_err)
    fit = PowerLawFit(group=group, form=form, E=float(theta[0]), A=float(np.exp(theta[1])),
                      alpha=float(theta[2]), n_points=len(size), n_sizes=n_sizes,
                      n_min=float(size.min()), n_max=float(size.max()), err_min=float(err.min()),
                      rmse_log=rmse, r2_log=r2, objective=objective, delta=delta)
    fit.warnings = notes + _identification_warnings(fit)
    return fit


def fit_groups(frame: pd.DataFrame, *, form: str = "offset",
               delta: float = DEFAULT_DELTA) -> dict[str, PowerLawFit]:
    """One fit per group of a standardised frame (columns group, size, error)."""
    return {str(g): fit_power_law(part["size"], part["error"], form=form, delta=delta,
                                  group=str(g))
            for g, part in frame.groupby("group", sort=True)}
