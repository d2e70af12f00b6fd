"""The paired readout: each row's test error minus the baseline's, seed by seed, at each n.

Fitted multipliers k compare whole curves and are ill-conditioned where a curve bends
(a sigmoidal error curve barely moves over a range of n, so a small error difference
becomes a huge or unbounded k). The paired difference needs no fit: at each size n,
d_s = err(row, seed s) - err(baseline, seed s) over the seeds both have, averaged.
Seeds share their data order and initialisation across rows, and every cell is graded
on the same test problems, so pairing removes most of the noise the two curves share.

The CI is a bootstrap over both sources of noise, per replicate: test problems are
drawn with replacement once and shared by every cell (`bootstrap.problem_errors`, when
per-problem results exist), then seeds are drawn with replacement, their deviations
from the mean inflated by sqrt(S / (S - 1)) as in `bootstrap.seed_resample`.
Percentile intervals. Pure numpy/pandas; no I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.bootstrap import percentile_interval, problem_errors

PAIRED_COLUMNS = ["group", "baseline", "n", "seeds", "diff", "diff_lo", "diff_hi", "resampled"]


def paired_differences(frame: pd.DataFrame, baseline: str,
                       per_problem: pd.DataFrame | None = None, *, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """One row per (group, n) of a standardised frame (analysis.tables.standardize) other
    than the baseline: the mean paired difference `diff` and its CI; and warnings."""
    frame = frame.reset_index(drop=True)
    rng = np.random.default_rng(seed)
    errors = _replicate_errors(frame, per_problem, n_boot, rng)
    where = {(g, float(n), str(s)): i for i, (g, n, s) in
             enumerate(zip(frame["group"], frame["cell_size"], frame["seed"], strict=True))}
    rows, warnings = [], []
    others = frame[frame["group"] != baseline]
    for (group, size), part in others.groupby(["group", "cell_size"], sort=True):
        keys = [(i, (baseline, float(size), str(s))) for i, s in zip(part.index, part["seed"],
                                                                    strict=True)]
        pairs = [(i, where[key]) for i, key in keys if key in where]
        if not pairs:
            warnings.append(f"{group} n={size:g}: no seed of {baseline} at this n to pair with")
            continue
        row_i, base_i = (np.array(side) for side in zip(*pairs, strict=True))
        diff = frame["error"].to_numpy()[row_i] - frame["error"].to_numpy()[base_i]
        replicates = None if errors is None else errors[:, row_i] - errors[:, base_i]
        lo, hi, how = _interval(diff, replicates, level, rng, n_boot)
        rows.append({"group": group, "baseline": baseline, "n": size, "seeds": len(pairs),
                     "diff": float(diff.mean()), "diff_lo": lo, "diff_hi": hi, "resampled": how})
    single = sorted({r["group"] for r in rows if r["seeds"] == 1})
    if single:
        warnings.append(f"paired differences of {', '.join(single)} rest on one seed: their CIs "
                        "cover test problems only, not seed-to-seed variation")
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS), warnings


def _replicate_errors(frame: pd.DataFrame, per_problem: pd.DataFrame | None, n_boot: int,
                      rng: np.random.Generator) -> np.ndarray | None:
    """[n_boot, rows] errors with test problems resampled (None: nothing to resample)."""
    if per_problem is None or n_boot == 0:
        return None
    return problem_errors(frame, per_problem, n_boot, rng)[0]


def _interval(diff: np.ndarray, replicates: np.ndarray | None, level: float,
              rng: np.random.Generator, n_boot: int) -> tuple[float, float, str]:
    """CI of the mean of `diff` (one per seed) from `replicates` ([n_boot, seeds]: the
    differences under resampled test problems; None: only seeds are resampled)."""
    seeds = len(diff)
    if n_boot == 0 or (replicates is None and seeds < 2):
        return np.nan, np.nan, "none"
    parts = ["seeds"] if seeds > 1 else []
    if replicates is None:
        replicates = np.broadcast_to(diff, (n_boot, seeds))
    else:
        parts.append("test problems")
    means = replicates.mean(axis=1)
    if seeds > 1:
        draw = rng.integers(0, seeds, size=replicates.shape)
        drawn = np.take_along_axis(replicates, draw, axis=1).mean(axis=1)
        means = means + np.sqrt(seeds / (seeds - 1)) * (drawn - means)
    lo, hi = percentile_interval(means, level)
    return float(lo), float(hi), " + ".join(parts)
