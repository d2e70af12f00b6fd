"""Bootstrap confidence intervals for the 1-D fits, vectorised across replicates.

What is resampled, per group:
- seeds: within each (group, size) cell the seeds' deviations from the cell
  mean (in log error) are drawn with replacement and inflated by
  sqrt(S / (S - 1)) for S seeds (see `seed_resample`);
- test problems, when per-problem results exist: problem ids are drawn with
  replacement ONCE per replicate and shared by every cell of every group (all
  cells were evaluated on the same problems, so errors are paired; resampling
  them jointly keeps the correlation that makes multipliers precise);
- residuals, only when a group has one row per cell and no per-problem data:
  log residuals of the point fit, inflated by sqrt(m / (m - p)), are resampled.
  Such intervals ignore seed-to-seed variation; a warning says so.

Each replicate is refit by minimising the same objective as the point estimate
(Huber sum of analysis.power_law.law_residuals, with the fit's own delta) with
the batched projected Levenberg-Marquardt of analysis.optimize, all replicates
of a group at once, from two starts (the point estimate and a low-E start),
keeping the better. Intervals are percentile intervals: the (1 - level)/2 and
(1 + level)/2 order statistics of the replicates (no interpolation, no bias
correction). Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.optimize import least_squares_batched
from analysis.power_law import PowerLawFit, bounds, law_residuals, predict

PARAMS_1D = ("E", "A", "alpha")


@dataclass
class Bootstrap:
    params: dict[str, np.ndarray]  # group -> [n_boot, 3] (E, A, alpha); NaN where not fitted
    n_boot: int
    level: float
    method: dict[str, str]         # group -> what was resampled
    warnings: list[str] = field(default_factory=list)

    def interval(self, group: str) -> dict[str, tuple[float, float]]:
        samples = self.params.get(group)
        if samples is None:
            return {name: (np.nan, np.nan) for name in PARAMS_1D}
        lo, hi = percentile_interval(samples, self.level)
        return {name: (float(lo[i]), float(hi[i])) for i, name in enumerate(PARAMS_1D)}


def percentile_interval(samples: np.ndarray, level: float, axis: int = 0):
    """(lo, hi) order statistics of the finite-or-infinite, non-NaN samples along axis."""
    q = [(1 - level) / 2, (1 + level) / 2]
    samples = np.asarray(samples, float)
    if np.isnan(samples).all():
        shape = np.delete(samples.shape, axis)
        return np.full(shape, np.nan), np.full(shape, np.nan)
    lo, hi = np.nanquantile(samples, q, axis=axis, method="inverted_cdf")
    return lo, hi


def band(samples: np.ndarray, sizes, level: float):
    """Pointwise percentile band of the fitted curve over sizes, from [n_boot, 3] samples."""
    ok = np.isfinite(samples).all(axis=1)
    if not ok.any():
        return np.full(len(sizes), np.nan), np.full(len(sizes), np.nan)
    return percentile_interval(predict(samples[ok], sizes), level)


def _key(group, size, seed) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([pd.Index(group, dtype=str), pd.Index(size, dtype=float),
                                      pd.Index(seed).astype(str)])


def problem_errors(frame: pd.DataFrame, per_problem: pd.DataFrame, n_boot: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """[n_boot, rows] errors under a shared resampling of problem ids, and which rows matched.

    Replicate errors are shifted so that the unweighted problem mean reproduces each
    row's own `error`, so the bootstrap centres on exactly the data that was fitted.
    """
    table = per_problem.pivot_table(index=["group", "size", "seed"], columns="problem_id",
                                    values="correct", aggfunc="mean")
    table.index = _key(*(table.index.get_level_values(i) for i in range(3)))
    rows = table.reindex(_key(frame["group"], frame["cell_size"], frame["seed"]))
    matched = rows.notna().any(axis=1).to_numpy()
    present = rows.notna().to_numpy(float)
    correct = rows.fillna(0.0).to_numpy(float)
    n_problems = correct.shape[1]
    counts = rng.multinomial(n_problems, np.full(n_problems, 1 / n_problems), size=n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        err_b = 1 - (counts @ correct.T) / (counts @ present.T)
        base = 1 - correct.sum(1) / present.sum(1)
    shifted = frame["error"].to_numpy()[None, :] + err_b - base[None, :]
    floor = 0.5 / max(n_problems, 1)  # half a problem: keeps log(error) finite
    errors = np.where(matched[None, :], np.maximum(shifted, floor), frame["error"].to_numpy())
    return errors, matched


def seed_resample(part: pd.DataFrame, log_err: np.ndarray, n_boot: int,
                  rng: np.random.Generator) -> np.ndarray:
    """[n_boot, rows] log errors with seeds redrawn within each cell (same size).

    Within a cell of S seeds, a replicate keeps the cell's mean log error and
    redraws the S deviations from it with replacement, inflated by
    sqrt(S / (S - 1)): a plain resample of S values has variance (S - 1)/S of the
    sample's, which at the usual 3 seeds makes 95% intervals cover ~85%
    (Davison & Hinkley 1997, sec. 3.3 and 2.6). Cells of one seed stay fixed.
    """
    log_err = np.broadcast_to(log_err, (n_boot, len(part))).copy()
    for _, rows in part.groupby("cell_size").indices.items():
        s = len(rows)
        if s < 2:
            continue
        cell = log_err[:, rows]
        mean = cell.mean(axis=1, keepdims=True)
        pick = rng.integers(0, s, size=(n_boot, s))
        log_err[:, rows] = mean + np.sqrt(s / (s - 1)) * (np.take_along_axis(cell, pick, 1) - mean)
    return log_err


def residual_errors(fit: PowerLawFit, part: pd.DataFrame, n_boot: int,
                    rng: np.random.Generator) -> np.ndarray:
    """[n_boot, rows] log errors: fitted curve plus resampled, leverage-inflated residuals."""
    log_fit = np.log(fit.predict(part["size"].to_numpy()))
    resid = np.log(part["error"].to_numpy()) - log_fit
    m, p = len(resid), 3 if fit.form == "offset" else 2
    resid = (resid - resid.mean()) * np.sqrt(m / max(m - p, 1))
    return log_fit[None, :] + resid[rng.integers(0, m, size=(n_boot, m))]


def refit_batch(fit: PowerLawFit, log_n: np.ndarray, log_err: np.ndarray) -> np.ndarray:
    """Minimise the fit's objective (its form and delta) for every replicate row of
    log_err [n_boot, rows]; returns [n_boot, 3] (E, A, alpha)."""
    n_boot = log_err.shape[0]
    err_min = np.exp(log_err.min(axis=1))
    lower, upper = bounds(fit.form, err_min)

    def fun(x, rows):
        return law_residuals(x, log_n, log_err[rows])

    best_x, best_f = None, None
    for e_share in (None, 0.1):
        x0 = np.tile(fit.theta, (n_boot, 1))
        if e_share is not None:
            x0[:, 0] = e_share * err_min
        result = least_squares_batched(fun, x0, lower, upper, delta=fit.delta)
        if best_x is None:
            best_x, best_f = result.x, result.fun
        else:
            better = result.fun < best_f
            best_x[better], best_f[better] = result.x[better], result.fun[better]
    return np.column_stack([best_x[:, 0], np.exp(best_x[:, 1]), best_x[:, 2]])


def _group_replicates(fit, part, errors_all, n_boot, rng):
    """(samples, method) for one group; errors_all is [n_boot, rows of part] or None."""
    has_seeds = part.groupby("cell_size").size().max() > 1
    log_n = np.log(part["size"].to_numpy())
    if errors_all is None and not has_seeds:
        log_err = residual_errors(fit, part, n_boot, rng)
        return refit_batch(fit, log_n, log_err), "residuals (one seed per size)"
    log_err = np.log(part["error"].to_numpy()) if errors_all is None else np.log(errors_all)
    if has_seeds:
        log_err = seed_resample(part, log_err, n_boot, rng)
    log_err = np.broadcast_to(log_err, (n_boot, len(part)))
    method = {(True, False): "seeds", (True, True): "seeds + test problems",
              (False, True): "test problems"}[(bool(has_seeds), errors_all is not None)]
    return refit_batch(fit, log_n, log_err), method


def bootstrap_fit(frame: pd.DataFrame, fits: dict[str, PowerLawFit], *,
                  per_problem: pd.DataFrame | None = None, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> Bootstrap:
    """Bootstrap every fitted group of a standardised frame (see module docstring); each
    group's replicates minimise that group's fit objective (form, delta)."""
    rng = np.random.default_rng(seed)
    frame = frame.reset_index(drop=True)
    errors, matched, warnings = None, None, []
    if per_problem is not None and len(per_problem):
        errors, matched = problem_errors(frame, per_problem, n_boot, rng)
        if not matched.all():
            warnings.append(f"{int((~matched).sum())} result row(s) have no per-problem "
                            "results; their test problems are not resampled")
    params, method = {}, {}
    for group, fit in fits.items():
        rows = np.flatnonzero((frame["group"] == group).to_numpy())
        if not fit.ok:
            params[group] = np.full((n_boot, 3), np.nan)
            method[group] = "none (no fit)"
            continue
        part = frame.iloc[rows].reset_index(drop=True)
        group_errors = None if errors is None or not matched[rows].any() else errors[:, rows]
        params[group], method[group] = _group_replicates(fit, part, group_errors, n_boot, rng)
        if method[group].startswith("residuals"):
            warnings.append(f"{group}: one seed per size and no per-problem results: CIs come "
                            "from resampled residuals and ignore seed-to-seed variation")
    return Bootstrap(params, n_boot, level, method, warnings)
