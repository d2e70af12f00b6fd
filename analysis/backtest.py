"""The extrapolation backtest: would the law have predicted the largest n it was shown?

A scaling study exists to extrapolate, so `fit` checks that on the data at hand: per
group, the largest observed size is held out, the same law (form, Huber delta) and the
same bootstrap (seeds and, when present, test problems) are fitted on the smaller sizes,
and the prediction at the held-out size is compared with what was observed there (the
mean over its seeds): the relative error, and whether the bootstrap band covered it.
A group with fewer than three smaller sizes cannot be refitted and is reported as such.
Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import band, bootstrap_fit
from analysis.power_law import fit_groups

BACKTEST_COLUMNS = ["group", "held_n", "fitted_sizes", "observed", "predicted", "predicted_lo",
                    "predicted_hi", "rel_error", "covered"]
MIN_SIZES = 3          # the law has three parameters


def backtest(frame: pd.DataFrame, per_problem: pd.DataFrame | None = None, *,
             form: str = "offset", delta: float | None = None, n_boot: int = 1000,
             level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """One row per group of a standardised frame (BACKTEST_COLUMNS), and warnings."""
    rows, warnings = [], []
    for group, part in frame.groupby("group", sort=True):
        sizes = np.sort(part["size"].unique())
        held = sizes[-1]
        train = part[part["size"] < held]
        if len(sizes) - 1 < MIN_SIZES:
            warnings.append(f"{group}: backtest needs {MIN_SIZES} sizes below the largest "
                            f"(n = {held:g}); it has {len(sizes) - 1}")
            continue
        kwargs = {"form": form} if delta is None else {"form": form, "delta": delta}
        fits = fit_groups(train, **kwargs)
        fit = fits[str(group)]
        if not fit.ok:
            warnings.append(f"{group}: the law could not be fitted below n = {held:g}")
            continue
        predicted = float(fit.predict(np.array([held]))[0])
        lo = hi = np.nan
        if n_boot > 0:
            boot = bootstrap_fit(train, fits, per_problem=per_problem, n_boot=n_boot,
                                 level=level, seed=seed)
            low, high = band(boot.params[str(group)], np.array([held]), level)
            lo, hi = float(low[0]), float(high[0])
        observed = float(part.loc[part["size"] == held, "error"].mean())
        rows.append({"group": group, "held_n": held, "fitted_sizes": len(sizes) - 1,
                     "observed": observed, "predicted": predicted, "predicted_lo": lo,
                     "predicted_hi": hi, "rel_error": predicted / observed - 1,
                     "covered": bool(lo <= observed <= hi) if np.isfinite(lo) else np.nan})
    missed = [r["group"] for r in rows if r["covered"] is False]
    if missed:
        warnings.append(f"backtest: the {level:.0%} band fitted below the largest n missed the "
                        f"observed error there for {', '.join(missed)}: extrapolate with care")
    return pd.DataFrame(rows, columns=BACKTEST_COLUMNS), warnings
