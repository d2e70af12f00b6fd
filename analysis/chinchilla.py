"""The 2-D law L(N, D) = E + A/N^alpha + B/D^beta, fit with Epoch AI's protocol.

Besiroglu, Erdil, Barnett, You 2024 ("Chinchilla Scaling: A replication attempt",
arXiv 2404.10102) refit Hoffmann et al.'s Approach 3 on points digitised from the
Chinchilla paper. Their protocol, followed here:

- parametrisation log L = LSE(a - alpha log N, b - beta log D, e), with
  A = exp(a), B = exp(b), E = exp(e), no bounds;
- objective: the SUM (not the mean: the mean's tiny scale stopped Hoffmann's
  optimiser early) of Huber losses, delta = 1e-3, on log-loss residuals;
- L-BFGS from every point of the grid alpha, beta in {0, 0.5, ..., 2},
  e in {-1, -0.5, ..., 1}, a, b in {0, 5, ..., 25} (4,500 starts), keep the best;
- their headline fit drops the five points with the highest loss (240 of 245
  kept; `drop_highest_loss(points, 5)` here, `--drop-highest-loss 5` on the
  command line), bootstrap over points (they used 4,000).

Points are a frame with columns N, D, loss (analysis.tables.load_points_2d).
The grid runs as one batched L-BFGS (analysis.optimize) and the winner is polished
by scipy's L-BFGS-B. Bootstrap replicates are multinomial point weights, solved
as one batch warm-started from the point estimate. No I/O here.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

from analysis.optimize import minimize_batched

PARAMS_2D = ("E", "A", "B", "alpha", "beta")
DEFAULT_DELTA_2D = 1e-3  # Epoch AI's Huber delta
EPOCH_GRID = {"alpha": np.arange(0, 2.5, 0.5), "beta": np.arange(0, 2.5, 0.5),
              "e": np.arange(-1, 1.5, 0.5), "a": np.arange(0, 30, 5), "b": np.arange(0, 30, 5)}


@dataclass(kw_only=True)
class Fit2D:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float          # sum of huber(delta, log residual) at the optimum
    delta: float
    n_points: int
    rmse_log: float
    r2_log: float
    theta: np.ndarray = field(repr=False)  # (a, b, e, alpha, beta)
    boot: np.ndarray | None = field(default=None, repr=False)  # [B, 5] in PARAMS_2D order
    level: float = 0.95
    warnings: list[str] = field(default_factory=list)

    def params(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in PARAMS_2D}

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Percentile bootstrap intervals (order statistics, no interpolation)."""
        if self.boot is None:
            return {}
        q = [(1 - self.level) / 2, (1 + self.level) / 2]
        return {name: tuple(float(v) for v in
                            np.quantile(self.boot[:, i], q, method="inverted_cdf"))
                for i, name in enumerate(PARAMS_2D)}


def _terms(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """[3, k, m] exponents of the three LSE terms for parameters theta[k, 5]."""
    a, b, e, alpha, beta = (theta[:, i:i + 1] for i in range(5))
    return np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(theta),
                                                                               log_n.shape[-1]))])


def lse_objective(theta, log_n, log_d, log_loss, weights=None, delta=DEFAULT_DELTA_2D):
    """Weighted sum of Huber losses of log-loss residuals, and its gradient, per row of theta."""
    # Grid starts such as a = 25, alpha = 0 overflow at first; their f is inf and the
    # line search rejects them, so numpy's warnings are noise here.
    with np.errstate(over="ignore", invalid="ignore"):
        t = _terms(theta, log_n, log_d)
        top = t.max(axis=0)
        share = np.exp(t - top)  # scipy's logsumexp is 2x slower here and this is the hot loop
        total = share.sum(axis=0)
        share /= total  # d pred / d (term exponent)
        pred = top + np.log(total)
        r = pred - log_loss
        w = 1.0 if weights is None else weights
        f = np.sum(w * huber(delta, r), axis=-1)
        dr = w * np.clip(r, -delta, delta)  # d huber(delta, r) / dr
        g = np.stack([np.sum(dr * share[0], -1), np.sum(dr * share[1], -1),
                      np.sum(dr * share[2], -1), -np.sum(dr * share[0] * log_n, -1),
                      -np.sum(dr * share[1] * log_d, -1)], axis=-1)
        return f, g


def epoch_grid() -> np.ndarray:
    """The 4,500 starting points (a, b, e, alpha, beta) of Besiroglu et al."""
    g = EPOCH_GRID
    return np.array([(a, b, e, al, be) for al, be, e, a, b in
                     itertools.product(g["alpha"], g["beta"], g["e"], g["a"], g["b"])])


def _best_start(log_n, log_d, log_loss, delta, starts):
    def fun(x, rows):
        return lse_objective(x, log_n, log_d, log_loss, delta=delta)
    batch = minimize_batched(fun, starts, max_iter=1000)
    return batch.x[np.nanargmin(np.where(np.isfinite(batch.fun), batch.fun, np.nan))]


def _polish(theta, log_n, log_d, log_loss, delta):
    def fun(x):
        f, g = lse_objective(x[None], log_n, log_d, log_loss, delta=delta)
        return f[0], g[0]
    res = minimize(fun, theta, jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 10000})
    return res.x if res.fun <= fun(theta)[0] else theta


def _goodness(theta, log_n, log_d, log_loss):
    pred = logsumexp(_terms(theta[None], log_n, log_d), axis=0)[0]
    resid = log_loss - pred
    ss_tot = np.sum((log_loss - log_loss.mean()) ** 2)
    return float(np.sqrt(np.mean(resid ** 2))), float(1 - np.sum(resid ** 2) / ss_tot)


def _logs(points: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.log(points[c].to_numpy(float)) for c in ("N", "D", "loss"))


def fit_chinchilla(points: pd.DataFrame, *, delta: float = DEFAULT_DELTA_2D,
                   starts: np.ndarray | None = None) -> Fit2D:
    """Point estimate of L(N, D) on points (columns N, D, loss), from Epoch's grid of starts."""
    log_n, log_d, log_loss = _logs(points)
    starts = epoch_grid() if starts is None else np.atleast_2d(starts)
    theta = _polish(_best_start(log_n, log_d, log_loss, delta, starts), log_n, log_d, log_loss,
                    delta)
    f, _ = lse_objective(theta[None], log_n, log_d, log_loss, delta=delta)
    rmse, r2 = _goodness(theta, log_n, log_d, log_loss)
    a, b, e, alpha, beta = theta
    fit = Fit2D(E=np.exp(e), A=np.exp(a), B=np.exp(b), alpha=alpha, beta=beta,
                objective=float(f[0]), delta=delta, n_points=len(log_n), rmse_log=rmse,
                r2_log=r2, theta=theta)
    if len(log_n) < 20:
        fit.warnings.append(f"2-D law: only {len(log_n)} points for 5 parameters; "
                            "the fit is poorly identified")
    return fit


def bootstrap_chinchilla(fit: Fit2D, points: pd.DataFrame, *, n_boot: int = 1000,
                         seed: int = 0, level: float = 0.95) -> Fit2D:
    """Resample the points fit was fitted to with replacement (as multinomial weights), refit
    each replicate with the fit's delta; returns fit with .boot and .level set."""
    log_n, log_d, log_loss = _logs(points)
    rng = np.random.default_rng(seed)
    m = len(log_n)
    weights = rng.multinomial(m, np.full(m, 1.0 / m), size=n_boot).astype(float)

    def fun(x, rows):
        return lse_objective(x, log_n, log_d, log_loss, weights=weights[rows], delta=fit.delta)
    batch = minimize_batched(fun, np.tile(fit.theta, (n_boot, 1)), max_iter=2000)
    th = batch.x
    fit.boot = np.column_stack([np.exp(th[:, 2]), np.exp(th[:, 0]), np.exp(th[:, 1]),
                                th[:, 3], th[:, 4]])
    fit.level = level
    return fit


def predict_2d(params: dict[str, float], n, d) -> np.ndarray:
    n, d = np.asarray(n, float), np.asarray(d, float)
    return params["E"] + params["A"] / n ** params["alpha"] + params["B"] / d ** params["beta"]


def drop_highest_loss(points: pd.DataFrame, k: int) -> pd.DataFrame:
    """Epoch's outlier rule: keep rows whose loss is below the k-th highest loss."""
    if k <= 0:
        return points
    cutoff = np.sort(points["loss"].to_numpy())[-k]
    return points[points["loss"] < cutoff]
