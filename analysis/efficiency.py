"""Efficiency multipliers: how many times more data the baseline needs for the same error.

For a group g and the baseline b (default `sft_teacher`), k solves
err_g(n) = err_b(k n). With err_b(n) = E_b + A_b n^-alpha_b the baseline reaches
error e at n_b*(e) = ((e - E_b) / A_b)^(-1/alpha_b), so

    k(n) = n_b*(err_g(n)) / n          (at the group's size n)
    k(e) = n_b*(e) / n_g*(e)           (at an error level e)

k is +inf when err_g(n) <= E_b: the baseline never gets there at any n.
A multiplier is "extrapolated" when the baseline size k n (or either size at an
error level) lies outside the sizes that group was observed at; then it rests
on the fitted law, not on data, and a warning says so. CIs are percentile
intervals over bootstrap replicates, computed per replicate from both groups'
replicate parameters (paired through the shared test-problem resampling).
Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import Bootstrap, percentile_interval
from analysis.power_law import PowerLawFit, predict

MULTIPLIER_COLUMNS = ["group", "baseline", "n", "err", "k", "k_lo", "k_hi", "baseline_n",
                      "extrapolated"]
LEVEL_COLUMNS = ["group", "baseline", "error", "n_group", "n_baseline", "k", "k_lo", "k_hi",
                 "extrapolated"]


def size_for_error(params: np.ndarray, error) -> np.ndarray:
    """n at which E + A n^-alpha equals error; +inf at or below E. params [3] or [k, 3]."""
    p = np.atleast_2d(np.asarray(params, float))
    e = np.atleast_1d(np.asarray(error, float))
    e = e[None, :] if e.ndim == 1 else e
    gap = e - p[:, :1]
    # Resamples with tiny alpha overflow to inf, which is the right answer there.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = np.where(gap > 0, (gap / p[:, 1:2]) ** (-1 / p[:, 2:3]), np.inf)
    n = np.where(np.isnan(p).any(axis=1, keepdims=True) | np.isnan(e), np.nan, n)
    return n[0] if np.ndim(params) == 1 and np.ndim(error) <= 1 else n


def multiplier_at_size(group_params, baseline_params, n) -> np.ndarray:
    """k(n) = n_b*(err_g(n)) / n, vectorised over rows of the parameter arrays."""
    err_g = predict(group_params, n)
    return size_for_error(baseline_params, err_g) / np.asarray(n, float)


def _outside(n, fit: PowerLawFit) -> np.ndarray:
    n = np.asarray(n, float)
    return ~np.isfinite(n) | (n < fit.n_min * (1 - 1e-9)) | (n > fit.n_max * (1 + 1e-9))


def multipliers_at_sizes(fits: dict[str, PowerLawFit], baseline: str,
                         sizes: dict[str, np.ndarray], boot: Bootstrap | None = None
                         ) -> pd.DataFrame:
    """One row per group (not the baseline) and observed size n: k, its CI, extrapolation flag."""
    frames = []
    base = fits[baseline]
    for group, fit in fits.items():
        if group == baseline:
            continue
        n = np.asarray(sorted(sizes[group]), float)
        k = multiplier_at_size(fit_params(fit), fit_params(base), n)
        lo = hi = np.full(len(n), np.nan)
        if boot is not None:
            lo, hi = percentile_interval(
                multiplier_at_size(boot.params[group], boot.params[baseline], n), boot.level)
        frames.append(pd.DataFrame({
            "group": group, "baseline": baseline, "n": n, "err": fit.predict(n), "k": k,
            "k_lo": lo, "k_hi": hi, "baseline_n": k * n,
            "extrapolated": _outside(k * n, base) & np.isfinite(k) | np.isinf(k)}))
    if not frames:
        return pd.DataFrame(columns=MULTIPLIER_COLUMNS)
    return pd.concat(frames, ignore_index=True)[MULTIPLIER_COLUMNS]


def fit_params(fit: PowerLawFit) -> np.ndarray:
    return np.array([fit.E, fit.A, fit.alpha])


def default_levels(fit: PowerLawFit, base: PowerLawFit, count: int = 3) -> np.ndarray:
    """Error levels spread (log-uniformly) over the range both fitted curves cover on data.

    Without overlap, the group's own fitted errors at its smallest, middle and
    largest size (multipliers there are extrapolations of the baseline).
    """
    g_range = fit.predict(np.array([fit.n_max, fit.n_min]))
    b_range = base.predict(np.array([base.n_max, base.n_min]))
    lo, hi = max(g_range[0], b_range[0]), min(g_range[1], b_range[1])
    if lo < hi:
        edge = (np.log(hi) - np.log(lo)) / (2 * count)
        return np.exp(np.linspace(np.log(lo) + edge, np.log(hi) - edge, count))
    return fit.predict(np.geomspace(fit.n_min, fit.n_max, count))


def multipliers_at_errors(fits: dict[str, PowerLawFit], baseline: str,
                          boot: Bootstrap | None = None, levels=None) -> pd.DataFrame:
    """k(e) = n_b*(e) / n_g*(e) at error levels (default: `default_levels` per group)."""
    frames = []
    base = fits[baseline]
    for group, fit in fits.items():
        if group == baseline or not (fit.ok and base.ok):
            continue
        e = np.asarray(default_levels(fit, base) if levels is None else levels, float)
        n_g, n_b = size_for_error(fit_params(fit), e), size_for_error(fit_params(base), e)
        lo = hi = np.full(len(e), np.nan)
        if boot is not None:
            with np.errstate(divide="ignore", invalid="ignore"):   # inf / inf: no k there
                k_boot = (size_for_error(boot.params[baseline], e)
                          / size_for_error(boot.params[group], e))
            lo, hi = percentile_interval(k_boot, boot.level)
        frames.append(pd.DataFrame({
            "group": group, "baseline": baseline, "error": e, "n_group": n_g,
            "n_baseline": n_b, "k": n_b / n_g, "k_lo": lo, "k_hi": hi,
            "extrapolated": _outside(n_g, fit) | _outside(n_b, base)}))
    if not frames:
        return pd.DataFrame(columns=LEVEL_COLUMNS)
    return pd.concat(frames, ignore_index=True)[LEVEL_COLUMNS]


ILL_CONDITIONED = 16.0   # k_hi / k_lo beyond this: the multiplier says little


def multiplier_warnings(table: pd.DataFrame, fits: dict[str, PowerLawFit]) -> list[str]:
    """One line per group whose multipliers need the baseline outside its observed sizes."""
    out = []
    for group, rows in table.groupby("group", sort=True):
        base = fits[rows["baseline"].iloc[0]]
        infinite = rows[np.isinf(rows["k"])]
        if len(infinite):
            out.append(f"{group}: at n = {_sizes(infinite['n'])} its error is below the "
                       f"baseline's fitted floor E = {base.E:.4g}: k is infinite (undefined)")
        far = rows[rows["extrapolated"] & np.isfinite(rows["k"])]
        if len(far):
            out.append(f"{group}: k at n = {_sizes(far['n'])} extrapolates the baseline "
                       f"{base.group} to n = {_sizes(far['baseline_n'])}, outside its observed "
                       f"range [{base.n_min:g}, {base.n_max:g}]")
        wide = rows[np.isfinite(rows["k"]) & ~(rows["k_hi"] <= ILL_CONDITIONED * rows["k_lo"])
                    & rows["k_lo"].notna()]
        if len(wide):
            out.append(f"{group}: k at n = {_sizes(wide['n'])} is ill-conditioned (its CI spans "
                       f"more than a factor {ILL_CONDITIONED:g}, or is unbounded): where the "
                       f"baseline's curve is flat a small error difference is a huge k; read "
                       f"the paired difference at those n instead")
    return out


def _sizes(values) -> str:
    return ", ".join(f"{v:.3g}" for v in values)
