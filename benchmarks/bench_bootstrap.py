"""Bootstrap CIs: the analysis package's vectorised bootstrap against refitting
each resample one by one with the same fitter; and, in the note, the time of a
sweep-sized bootstrap that resamples seeds and test problems (about 0.5 s on 2
cores, measured when it was a unit test's bound)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import bootstrap_fit, fit_groups, fit_power_law, standardize
from benchmarks.common import Ratio, timed

GROUPS, SIZES, SEEDS, RESAMPLES = 5, (250, 500, 1000, 2000, 4000, 8000), 3, 200
PROBLEMS, PROBLEM_RESAMPLES = 500, 1000


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"data_type": f"type{g}", "n": n, "seed": s,
             "test_error": 0.1 + 2.0 * n ** -(0.3 + 0.05 * g) * np.exp(rng.normal(0, 0.03))}
            for g in range(GROUPS) for n in SIZES for s in range(SEEDS)]
    return standardize(pd.DataFrame(rows))


def _per_problem(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame's cells graded on PROBLEMS shared problems of uniform difficulty u: a cell
    with error p gets a problem right iff u > p (so its errors move to the graded ones)."""
    u = np.random.default_rng(1).random(PROBLEMS)
    correct = (u[None, :] > frame["error"].to_numpy()[:, None]).astype(int)
    graded = frame.assign(error=1 - correct.mean(axis=1))
    problems = pd.DataFrame({
        "group": np.repeat(frame["group"].to_numpy(), PROBLEMS),
        "size": np.repeat(frame["size"].to_numpy(), PROBLEMS),
        "seed": np.repeat(frame["seed"].to_numpy(), PROBLEMS),
        "problem_id": np.tile([f"q{j}" for j in range(PROBLEMS)], len(frame)),
        "correct": correct.ravel()})
    return graded, problems


def _loop(frame: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    for _, part in frame.groupby("group"):
        cells = [cell for _, cell in part.groupby("size")]
        for _ in range(RESAMPLES):
            sample = pd.concat([cell.sample(len(cell), replace=True, random_state=rng)
                                for cell in cells])
            means = sample.groupby("size")["error"].mean()
            fit_power_law(means.index.to_numpy(), means.to_numpy())


def run() -> Ratio:
    frame = _frame()
    fits = fit_groups(frame)
    base_s, _ = timed(lambda: _loop(frame))
    fast_s, _ = timed(lambda: bootstrap_fit(frame, fits, n_boot=RESAMPLES))
    graded, problems = _per_problem(frame)
    graded_fits = fit_groups(graded)
    problems_s, _ = timed(lambda: bootstrap_fit(graded, graded_fits, per_problem=problems,
                                                 n_boot=PROBLEM_RESAMPLES, seed=1))
    return Ratio("bootstrap", "refit each resample in a loop", "vectorised bootstrap",
                 base_s, fast_s, f"{GROUPS} groups x {RESAMPLES} resamples, "
                                 f"{len(SIZES)} sizes x {SEEDS} seeds; "
                                 f"{PROBLEM_RESAMPLES} resamples of seeds and {PROBLEMS} "
                                 f"test problems: {problems_s:.2f}s")
