"""Batched minimisation: many independent smooth problems solved at once.

Bootstrap replicates and Epoch AI's grid of initialisations are thousands of
tiny fits (3 to 5 parameters, tens to hundreds of points). One scipy call per fit
spends its time in Python overhead; here every step is one numpy operation over
the whole batch, so 1,000 replicates cost about as much as a few scipy fits.

Two methods, each checked against scipy in tests/analysis/test_optimize.py:
- `minimize_batched`: unconstrained L-BFGS (two-loop recursion, Armijo
  backtracking) on an objective with gradient; the 2-D law's protocol.
- `least_squares_batched`: Huber-robust nonlinear least squares within box
  bounds (projected Levenberg-Marquardt on IRLS weights); the 1-D bootstrap,
  whose bounds (E >= 0, E <= smallest error) are often active.

Pure numpy (the Huber loss is scipy.special.huber); no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import huber

# fun(x[k, p], rows[k]) -> (f[k], grad[k, p]); rows say which problems of the batch x belongs to.
BatchObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray          # [k, p] solutions
    fun: np.ndarray        # [k] objective at x
    converged: np.ndarray  # [k] bool: stopped by a tolerance, not by max_iter
    n_iter: int


@dataclass
class _State:
    x: np.ndarray
    f: np.ndarray
    g: np.ndarray
    s: np.ndarray      # [m, k, p] step history
    y: np.ndarray      # [m, k, p] gradient-change history
    rho: np.ndarray    # [m, k], 0 where a slot is empty
    slot: np.ndarray   # [k] next ring-buffer slot


class _Active:
    """Which problems of a batch still iterate. A problem whose objective is not finite at
    its start never does (and counts as converged: there is nothing to improve)."""

    def __init__(self, f: np.ndarray, max_iter: int):
        self.running = np.isfinite(f)
        self.converged = ~self.running
        self.max_iter = max_iter
        self.n_iter = 0

    def __iter__(self):
        """Yields the rows still running, once an iteration, until none is or max_iter."""
        while self.running.any() and self.n_iter < self.max_iter:
            self.n_iter += 1
            yield np.flatnonzero(self.running)

    def stop(self, rows: np.ndarray) -> None:
        self.converged[rows] = True
        self.running[rows] = False


def _two_loop(st: _State, rows: np.ndarray) -> np.ndarray:
    """-H g for each problem in rows, from its own (s, y) history."""
    m = st.s.shape[0]
    q = st.g[rows].copy()
    alphas = np.zeros((m, len(rows)))
    order = [(st.slot[rows] - 1 - i) % m for i in range(m)]  # newest first
    for i, j in enumerate(order):
        s, y, rho = st.s[j, rows], st.y[j, rows], st.rho[j, rows]
        alphas[i] = rho * np.einsum("kp,kp->k", s, q)
        q -= alphas[i][:, None] * y
    newest = order[0]
    s, y = st.s[newest, rows], st.y[newest, rows]
    yy = np.einsum("kp,kp->k", y, y)
    has = (st.rho[newest, rows] > 0) & (yy > 0)
    gamma = np.where(has, np.einsum("kp,kp->k", s, y) / np.where(has, yy, 1.0), 1.0)
    r = gamma[:, None] * q
    for i, j in reversed(list(enumerate(order))):
        s, y, rho = st.s[j, rows], st.y[j, rows], st.rho[j, rows]
        beta = rho * np.einsum("kp,kp->k", y, r)
        r += (alphas[i] - beta)[:, None] * s
    return -r


def _direction(st: _State, rows) -> np.ndarray:
    d = _two_loop(st, rows)
    g = st.g[rows]
    bad = np.einsum("kp,kp->k", d, g) >= 0
    if bad.any():  # not a descent direction: forget the history, step down the gradient
        st.rho[:, rows[bad]] = 0.0
        d[bad] = -g[bad] / np.maximum(np.linalg.norm(g[bad], axis=1, keepdims=True), 1.0)
    return d


def _line_search(fun, st, rows, d, max_halvings=40, c1=1e-4):
    """Armijo backtracking from t = 1; returns new x, f, g and which problems moved."""
    t = np.ones(len(rows))
    x0, f0, g0 = st.x[rows], st.f[rows], st.g[rows]
    x_new, f_new, g_new = x0.copy(), f0.copy(), g0.copy()
    todo = np.arange(len(rows))
    moved = np.zeros(len(rows), bool)
    slope = np.einsum("kp,kp->k", g0, d)
    for _ in range(max_halvings):
        if todo.size == 0:
            break
        trial = x0[todo] + t[todo, None] * d[todo]
        f, g = fun(trial, rows[todo])
        ok = np.isfinite(f) & (f <= f0[todo] + c1 * t[todo] * slope[todo])
        done = todo[ok]
        x_new[done], f_new[done], g_new[done] = trial[ok], f[ok], g[ok]
        moved[done] = True
        todo = todo[~ok]
        t[todo] *= 0.5
    return x_new, f_new, g_new, moved


def _remember(st: _State, rows, x_new, g_new) -> None:
    """Store the newest (s, y) pair where it keeps the inverse Hessian positive definite."""
    s, y = x_new - st.x[rows], g_new - st.g[rows]
    sy = np.einsum("kp,kp->k", s, y)
    keep = sy > 1e-12 * np.linalg.norm(s, axis=1) * np.linalg.norm(y, axis=1)
    slot = st.slot[rows]
    st.s[slot, rows], st.y[slot, rows] = s, y
    st.rho[slot, rows] = np.where(keep, 1.0 / np.where(keep, sy, 1.0), 0.0)
    st.slot[rows] = (slot + 1) % st.s.shape[0]


def minimize_batched(fun: BatchObjective, x0: np.ndarray, *, memory: int = 10,
                     max_iter: int = 500, gtol: float = 1e-9,
                     ftol: float = 1e-12) -> BatchResult:
    """Minimise k independent unconstrained objectives from starting points x0[k, p].

    A problem stops when its gradient is below gtol (max norm), or its relative
    decrease (f_old - f_new) / max(|f_old|, |f_new|, 1) is at most ftol (scipy's
    L-BFGS-B criterion), or no step along the search direction decreases it.
    """
    x = np.asarray(x0, float).copy()
    k, p = x.shape
    f, g = fun(x, np.arange(k))
    st = _State(x, f, g, np.zeros((memory, k, p)), np.zeros((memory, k, p)),
                np.zeros((memory, k)), np.zeros(k, int))
    active = _Active(f, max_iter)
    for rows in active:
        x_new, f_new, g_new, moved = _line_search(fun, st, rows, _direction(st, rows))
        _remember(st, rows[moved], x_new[moved], g_new[moved])
        small = (f[rows] - f_new) <= ftol * np.maximum(np.maximum(abs(f[rows]), abs(f_new)), 1.0)
        st.x[rows], st.f[rows], st.g[rows] = x_new, f_new, g_new
        stop = ~moved | (np.abs(g_new).max(axis=1) <= gtol) | (small & moved)
        active.stop(rows[stop])
    return BatchResult(st.x, st.f, active.converged, active.n_iter)


# fun(x[k, p], rows[k]) -> (residuals[k, m], jacobian[k, m, p]) of the problems in rows.
BatchResiduals = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# Stopping tolerances of least_squares_batched: relative decrease of the objective, and a
# step's size relative to the parameters'.
LS_FTOL, LS_XTOL = 1e-12, 1e-10


def _huber_sum(r, delta):
    return np.sum(huber(delta, r), axis=-1)


def _free_system(jac, r, x, lower, upper, delta):
    """Gauss-Newton system with IRLS Huber weights; variables held at a bound are removed."""
    c = np.minimum(1.0, delta / np.maximum(np.abs(r), 1e-300))
    g = np.einsum("kmp,km->kp", jac, c * r)
    h = np.einsum("kmp,km,kmq->kpq", jac, c, jac)
    held = ((x <= lower) & (g > 0)) | ((x >= upper) & (g < 0))
    g = np.where(held, 0.0, g)
    keep = ~held
    h = h * keep[:, :, None] * keep[:, None, :] + np.eye(x.shape[1]) * held[:, :, None]
    return g, h


def least_squares_batched(fun: BatchResiduals, x0: np.ndarray, lower: np.ndarray,
                          upper: np.ndarray, *, delta: float, max_iter: int = 200) -> BatchResult:
    """Minimise sum(huber(delta, r(x))) for k problems at once, within bounds [k, p] (or [p]).

    Levenberg-Marquardt on the iteratively reweighted Gauss-Newton system (IRLS
    weights min(1, delta/|r|): its fixed points are the Huber minimisers), with
    variables held at an active bound dropped from the system (projected Newton,
    Bertsekas 1982). For a few parameters this converges in tens of iterations
    where first-order methods crawl along a bound.
    """
    x = np.asarray(x0, float).copy()
    k, p = x.shape
    lower = np.broadcast_to(np.asarray(lower, float), (k, p))
    upper = np.broadcast_to(np.asarray(upper, float), (k, p))
    x = np.clip(x, lower, upper)
    r, jac = fun(x, np.arange(k))
    f = _huber_sum(r, delta)
    lam = np.full(k, 1e-3)
    active = _Active(f, max_iter)
    for rows in active:
        g, h = _free_system(jac[rows], r[rows], x[rows], lower[rows], upper[rows], delta)
        diag = np.einsum("kpp->kp", h)
        damped = h + (lam[rows, None] * np.maximum(diag, 1e-12))[:, :, None] * np.eye(p)
        step = -np.linalg.solve(damped, g[:, :, None])[:, :, 0]
        trial = np.clip(x[rows] + step, lower[rows], upper[rows])
        r_t, jac_t = fun(trial, rows)
        f_t = _huber_sum(r_t, delta)
        better = np.isfinite(f_t) & (f_t <= f[rows])
        gain = f[rows] - f_t
        moved = np.abs(trial - x[rows]).max(axis=1)
        took = rows[better]
        x[took], f[took], r[took], jac[took] = trial[better], f_t[better], r_t[better], jac_t[better]
        lam[took] = np.maximum(lam[took] / 3, 1e-12)
        lam[rows[~better]] *= 4
        tiny_step = moved <= LS_XTOL * (1 + np.abs(trial).max(axis=1))
        small = better & (gain <= LS_FTOL * np.maximum(np.abs(f_t), 1.0))
        active.stop(rows[small | (better & tiny_step) | (lam[rows] > 1e12)])
    return BatchResult(x, f, active.converged, active.n_iter)
