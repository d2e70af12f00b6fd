"""Power analysis before a sweep: can this grid tell an efficiency multiplier k from 1,
or an error difference d from 0, at the analysis's confidence level?

From a pilot (a results table, e.g. a small sweep's results.csv):

- the baseline law err_b(n): the project's fit (`fit_groups`) of the pilot's baseline rows;
- each data type's seed spread: the standard deviation over seeds of log test error within
  a (type, n) cell, pooled over the cells with two seeds or more (`pilot_spread`).

Then, for the planned grid (sizes, seeds, n_test), sweeps are simulated: the baseline at
err_b(n), a data type at err_b(k n) (or err_b(n) - d); every cell's error gets its
type's seed noise (log-normal); test problems have a difficulty u ~ U(0, 1) shared by
every cell, and a cell with error p gets a problem right iff u > p, so the test errors
carry the binomial error of n_test and are paired across cells as in a real sweep. Each
simulated sweep goes through the project's own analysis: `fit_groups`, `bootstrap_fit`
(seeds and test problems resampled) and `multipliers_at_sizes`. k is detected at n when
its CI excludes 1 (k_lo > 1); d when the CI of err_type(n) - err_b(n), from the same
bootstrap replicates, excludes 0. Power = the fraction of simulated sweeps that detect
it; the smallest detectable k (or d) at n is the first on a ladder whose power reaches
`target` (default 80 %).

Pure numpy/pandas; no I/O; imports nothing from the orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit, percentile_interval
from analysis.efficiency import fit_params, multipliers_at_sizes
from analysis.power_law import PowerLawFit, fit_groups, predict
from analysis.tables import InputError

K_LADDER = (1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)
D_LADDER = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
POWER_COLUMNS = ["data_type", "n", "seeds", "n_test", "seed_sd", "baseline_error",
                 "power_k2", "min_k", "min_d"]


@dataclass(frozen=True)
class Grid:
    """The planned grid: what the power is computed for."""

    sizes: tuple[int, ...]
    seeds: int
    n_test: int
    data_types: tuple[str, ...]
    baseline: str = "sft_teacher"


@dataclass(frozen=True, kw_only=True)
class PowerOptions:
    sims: int = field(default=40, metadata={"help": "simulated sweeps per candidate effect"})
    n_boot: int = field(default=200, metadata={"help": "bootstrap resamples per simulated "
                                                      "sweep"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the CIs"})
    target: float = field(default=0.8, metadata={"help": "power a detectable effect reaches"})
    seed: int = field(default=0, metadata={"help": "RNG seed of the simulation"})
    seed_sd: float | None = field(default=None, metadata={
        "help": "seed spread (sd of log error) to use instead of the pilot's"})
    k_ladder: tuple[float, ...] = field(default=K_LADDER, metadata={
        "help": "multipliers tried, smallest first"})
    d_ladder: tuple[float, ...] = field(default=D_LADDER, metadata={
        "help": "error differences tried, smallest first"})


@dataclass(frozen=True)
class Pilot:
    law: PowerLawFit                    # the baseline's fitted law
    seed_sd: dict[str, float]           # data type -> sd of log error over seeds
    warnings: list[str]


def pilot_spread(frame: pd.DataFrame, n_test: float) -> tuple[dict[str, float], list[str]]:
    """Seed sd of log error per group: the pooled within-cell sample variance over seeds.

    Every cell of a sweep is evaluated on the same test problems, so the test set's own
    binomial error is shared by a cell's seeds and is not in their spread; the planned
    n_test's binomial error enters through the simulation instead. Seeds that disagree
    on which problems they miss add a little to the spread: kept (it errs towards
    larger detectable effects, not smaller)."""
    spread, warnings = {}, []
    for group, part in frame.groupby("group", sort=True):
        cells = [c["error"].to_numpy() for _, c in part.groupby("cell_size") if len(c) > 1]
        cells = [np.clip(c, 0.5 / n_test, 1 - 0.5 / n_test) for c in cells]
        if not cells:
            spread[str(group)] = 0.0
            warnings.append(f"{group}: one seed per cell in the pilot: seed spread unknown, "
                            "taken as 0 (detectable effects are then optimistic)")
            continue
        spread[str(group)] = float(np.sqrt(np.mean([np.var(np.log(c), ddof=1)
                                                    for c in cells])))
    return spread, warnings


def read_pilot(frame: pd.DataFrame, baseline: str, n_test: float) -> Pilot:
    if baseline not in set(frame["group"]):
        raise InputError(f"pilot: baseline {baseline!r} has no rows (has: "
                         f"{', '.join(sorted(set(frame['group'])))})")
    law = fit_groups(frame[frame["group"] == baseline])[baseline]
    if not law.ok:
        raise InputError(f"pilot: the baseline {baseline!r} could not be fitted (it needs two "
                         "sizes or more)")
    spread, warnings = pilot_spread(frame, n_test)
    return Pilot(law, spread, warnings)


def simulate(grid: Grid, errors: dict[str, np.ndarray], seed_sd: dict[str, float],
             rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One simulated sweep: results (standardised columns) and per-problem tables.
    errors: group -> true error at each of grid.sizes."""
    u = rng.random(grid.n_test)
    rows, problems = [], []
    for group, true in errors.items():
        for n, p0 in zip(grid.sizes, true, strict=True):
            for seed in range(grid.seeds):
                p = float(np.clip(p0 * np.exp(rng.normal(0, seed_sd[group])), 1e-6, 1 - 1e-6))
                correct = (u > p).astype(float)
                error = max(1 - correct.mean(), 0.5 / grid.n_test)   # log space needs > 0
                rows.append((group, float(n), error, str(seed), float(n)))
                problems.append(pd.DataFrame({"group": group, "size": float(n),
                                              "seed": str(seed), "correct": correct,
                                              "problem_id": np.arange(grid.n_test)}))
    frame = pd.DataFrame(rows, columns=["group", "size", "error", "seed", "cell_size"])
    return frame, pd.concat(problems, ignore_index=True)


def _detections(grid: Grid, errors, seed_sd, options: PowerOptions, rng, what: str
                ) -> np.ndarray:
    """[sims, sizes] booleans: whether each simulated sweep detects the effect at each n."""
    found = np.zeros((options.sims, len(grid.sizes)), bool)
    sizes = np.asarray(grid.sizes, float)
    for i in range(options.sims):
        frame, per_problem = simulate(grid, errors, seed_sd, rng)
        fits = fit_groups(frame)
        if not all(f.ok for f in fits.values()):
            continue
        boot = bootstrap_fit(frame, fits, per_problem=per_problem, n_boot=options.n_boot,
                             level=options.level, seed=int(rng.integers(2**31)))
        if what == "k":
            table = multipliers_at_sizes(fits, "base", {"type": sizes}, boot)
            found[i] = table["k_lo"].to_numpy() > 1
        else:
            diff = predict(boot.params["type"], sizes) - predict(boot.params["base"], sizes)
            lo, hi = percentile_interval(diff, options.level)
            found[i] = (hi < 0) | (lo > 0)
    return found


def _smallest(grid: Grid, ladder, errors_for, seed_sd, options, rng, what
              ) -> tuple[np.ndarray, dict[float, np.ndarray]]:
    """Per size, the first effect on the ladder whose power reaches the target (nan: none)."""
    smallest = np.full(len(grid.sizes), np.nan)
    powers = {}
    for effect in ladder:
        power = _detections(grid, errors_for(effect), seed_sd, options, rng, what).mean(axis=0)
        powers[effect] = power
        reached = np.isnan(smallest) & (power >= options.target)
        smallest[reached] = effect
        if not np.isnan(smallest).any():
            break
    return smallest, powers


def power_table(pilot_frame: pd.DataFrame, grid: Grid, pilot_n_test: float,
                options: PowerOptions = PowerOptions()) -> tuple[pd.DataFrame, list[str]]:
    """One row per data type (not the baseline) and size: power at k = 2, the smallest
    detectable k and error difference d (module docstring)."""
    pilot = read_pilot(pilot_frame, grid.baseline, pilot_n_test)
    rng = np.random.default_rng(options.seed)
    sizes = np.asarray(grid.sizes, float)
    spread = dict(pilot.seed_sd)
    warnings = list(pilot.warnings)
    base_err = _clipped(predict(fit_params(pilot.law), sizes), grid, warnings)
    rows = []
    for data_type in [t for t in grid.data_types if t != grid.baseline]:
        sd = _type_spread(data_type, spread, grid.baseline, options, warnings)
        seed_sd = {"base": spread.get(grid.baseline, 0.0) if options.seed_sd is None
                   else options.seed_sd, "type": sd}

        def k_errors(k):
            return {"base": base_err, "type": np.minimum(predict(fit_params(pilot.law),
                                                                 k * sizes), base_err)}

        def d_errors(d):
            return {"base": base_err, "type": np.maximum(base_err - d, 1e-4)}

        min_k, k_powers = _smallest(grid, options.k_ladder, k_errors, seed_sd, options, rng, "k")
        min_d, _ = _smallest(grid, options.d_ladder, d_errors, seed_sd, options, rng, "d")
        power_k2 = k_powers.get(2.0)
        if power_k2 is None:        # the ladder stopped below 2: every size detects less
            power_k2 = _detections(grid, k_errors(2.0), seed_sd, options, rng, "k").mean(0)
        for j, n in enumerate(grid.sizes):
            rows.append([data_type, n, grid.seeds, grid.n_test, sd, base_err[j],
                         power_k2[j], min_k[j], min_d[j]])
    return pd.DataFrame(rows, columns=POWER_COLUMNS), warnings


def _clipped(errors: np.ndarray, grid: Grid, warnings: list[str]) -> np.ndarray:
    """The baseline law's errors, capped below 1 (a law fitted to a steep pilot can pass 1
    at sizes below the pilot's)."""
    ceiling = 1 - 0.5 / grid.n_test
    over = [n for n, e in zip(grid.sizes, errors, strict=True) if e > ceiling]
    if over:
        warnings.append(f"the baseline's fitted law is above 1 at n = "
                        f"{', '.join(map(str, over))}: taken as {ceiling:.4g} there")
    return np.minimum(errors, ceiling)


def _type_spread(data_type, spread, baseline, options, warnings) -> float:
    if options.seed_sd is not None:
        return options.seed_sd
    if data_type in spread:
        return spread[data_type]
    warnings.append(f"{data_type}: not in the pilot: its seed spread is taken as the "
                    f"baseline's ({spread.get(baseline, 0.0):.3g})")
    return spread.get(baseline, 0.0)


def describe_power(table: pd.DataFrame, grid: Grid, options: PowerOptions,
                   warnings: list[str]) -> str:
    lines = [f"power of the grid: sizes {list(grid.sizes)}, {grid.seeds} seed(s), n_test "
             f"{grid.n_test}; {options.sims} simulated sweeps per effect, {options.n_boot} "
             f"bootstrap resamples, {options.level:.0%} CIs; detectable = power >= "
             f"{options.target:.0%}",
             f"  {'data_type':<14} {'n':>6} {'seed sd':>8} {'err_b':>6} {'P(k=2 seen)':>12} "
             f"{'min k':>6} {'min d':>6}"]
    for row in table.itertuples(index=False):
        min_k = f"{row.min_k:g}" if np.isfinite(row.min_k) else f">{options.k_ladder[-1]:g}"
        min_d = f"{row.min_d:g}" if np.isfinite(row.min_d) else f">{options.d_ladder[-1]:g}"
        lines.append(f"  {row.data_type:<14} {row.n:>6} {row.seed_sd:>8.3f} "
                     f"{row.baseline_error:>6.3f} {row.power_k2:>12.0%} {min_k:>6} {min_d:>6}")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
