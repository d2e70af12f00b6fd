"""The next best experiment: which cells to add so that a multiplier's CI shrinks most per
device-second.

From a sweep's results (the pilot), for one data type against the baseline at one size
n* (default: the data type's largest), candidate additions to the grid are compared:

- `seed`: one more seed of every size (`grid.seeds=[...]`);
- `size up` / `size down`: a size twice the largest or half the smallest, with the pilot's
  seeds (`grid.sizes=[...]`);
- `test problems`: twice the test set (`task.n_test=...`).

Candidates are ranked by the lower bound of their gain (the log-width narrowing minus two
simulation standard errors) per added device-hour; one whose gain is not clear of the
simulation noise is listed unranked.

Each design's expected CI width of k(n*) (as the factor k_hi / k_lo) is estimated by
simulation, as `analysis.power` does: the two groups' fitted laws are the truth, every
cell gets its group's pilot seed spread and the binomial error of its n_test, and each
simulated sweep goes through the project's own fit and bootstrap. The cost of a design is
what it adds, in device-seconds, from a cost model fitted to the pilot's cost per cell
(`device_seconds` + `eval_device_seconds`, linear in n, per group). More test problems
re-run every evaluation of both groups at twice the test set, priced at twice the pilot's
`eval_device_seconds` per cell (an upper bound: an evaluation's start-up does not
double). Results without `eval_device_seconds` (written before it existed) leave that
candidate's cost unknown and it is listed without a rank.
The current design is simulated the same way, so every width is compared like for like.

Pure numpy/pandas; no I/O; imports nothing from the orchestrator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.bootstrap import bootstrap_fit
from analysis.efficiency import multipliers_at_sizes
from analysis.power import pilot_spread
from analysis.power_law import fit_groups
from analysis.tables import InputError

SUGGEST_COLUMNS = ["candidate", "overrides", "added_device_seconds", "k_width",
                   "width_gain", "gain_se", "gain_per_device_hour"]
WIDEST = 256.0       # an unbounded CI counts as this factor


@dataclass(frozen=True)
class Design:
    sizes: tuple[int, ...]
    seeds: int
    n_test: int


def cost_model(frame: pd.DataFrame, groups: tuple[str, str]) -> dict[str, np.ndarray]:
    """group -> (a, b): device-seconds of one cell = a + b n, least squares on the pilot's
    cells (b >= 0; one size: proportional to n)."""
    if "device_seconds" not in frame.columns:
        raise InputError("suggest: the results have no device_seconds column (a sweep's "
                         "results.csv has): the cost of a cell is unknown")
    model = {}
    for group in groups:
        part = frame[frame["group"] == group]
        n, cost = part["cell_size"].to_numpy(float), part["device_seconds"].to_numpy(float)
        if "eval_device_seconds" in part.columns:
            cost = cost + part["eval_device_seconds"].fillna(0.0).to_numpy(float)
        if len(np.unique(n)) < 2:
            model[group] = np.array([0.0, float(np.mean(cost / n))])
            continue
        b, a = np.polyfit(n, cost, 1)
        model[group] = np.array([max(a, 0.0), max(b, 0.0)]) if b >= 0 else \
            np.array([float(np.mean(cost)), 0.0])
    return model


def cells_cost(model: dict[str, np.ndarray], sizes, seeds: int) -> float:
    return float(sum(seeds * (a + b * n) for a, b in model.values() for n in sizes))


def more_test_problems_cost(frame: pd.DataFrame, groups: tuple[str, str], design: Design
                            ) -> float:
    """Device-seconds of re-evaluating every cell of `design` on twice the test set: twice
    each group's mean `eval_device_seconds` per cell; NaN when the results lack it."""
    if "eval_device_seconds" not in frame.columns:
        return np.nan
    per_cell = frame[frame["group"].isin(groups)].groupby("group")["eval_device_seconds"].mean()
    if per_cell.isna().any() or len(per_cell) < len(groups):
        return np.nan
    return float(2 * per_cell.sum() * len(design.sizes) * design.seeds)


def candidates(current: Design) -> dict[str, Design]:
    sizes = current.sizes
    return {
        "seed": Design(sizes, current.seeds + 1, current.n_test),
        "size up": Design(tuple(sorted({*sizes, 2 * max(sizes)})), current.seeds,
                          current.n_test),
        "size down": Design(tuple(sorted({*sizes, max(1, min(sizes) // 2)})), current.seeds,
                            current.n_test),
        "test problems": Design(sizes, current.seeds, 2 * current.n_test),
    }


def simulated_log_widths(design: Design, truth: dict, seed_sd: dict[str, float], at_n: float,
                         *, sims: int, n_boot: int, level: float, seed: int) -> np.ndarray:
    """log(k_hi / k_lo) at at_n (capped at WIDEST) in each of `sims` simulated sweeps of
    `design`. Common random numbers: a cell's seed noise is drawn from a generator keyed
    by (sweep, group, n, seed) and test-problem difficulties are a prefix-stable stream,
    so two designs share every cell they have in common and their paired difference
    carries little simulation noise."""
    sizes = np.asarray(design.sizes, float)
    errors = {g: np.clip(law.predict(sizes), 1e-4, 1 - 0.5 / design.n_test)
              for g, law in truth.items()}
    out = np.empty(sims)
    for i in range(sims):
        frame, per_problem = _aligned_sweep(design, errors, seed_sd, (seed, i))
        fits = fit_groups(frame)
        if not all(f.ok for f in fits.values()):
            out[i] = np.log(WIDEST)
            continue
        boot = bootstrap_fit(frame, fits, per_problem=per_problem, n_boot=n_boot, level=level,
                             seed=seed + i)
        out[i] = np.log(k_width(fits, boot, at_n))
    return out


def _aligned_sweep(design: Design, errors: dict, seed_sd: dict[str, float], key: tuple
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    u = np.random.default_rng([*key, 0]).random(design.n_test)      # prefix-stable
    rows, problems = [], []
    for g, (group, true) in enumerate(sorted(errors.items())):
        for n, p0 in zip(design.sizes, true, strict=True):
            for s in range(design.seeds):
                noise = np.random.default_rng([*key, 1 + g, int(n), s]).normal(0, seed_sd[group])
                p = float(np.clip(p0 * np.exp(noise), 1e-6, 1 - 1e-6))
                correct = (u > p).astype(float)
                rows.append((group, float(n), max(1 - correct.mean(), 0.5 / design.n_test),
                             str(s), float(n)))
                problems.append(pd.DataFrame({"group": group, "size": float(n), "seed": str(s),
                                              "correct": correct,
                                              "problem_id": np.arange(design.n_test)}))
    frame = pd.DataFrame(rows, columns=["group", "size", "error", "seed", "cell_size"])
    return frame, pd.concat(problems, ignore_index=True)


def k_width(fits: dict, boot, at_n: float) -> float:
    """k_hi / k_lo of `type` against `base` at at_n, WIDEST when unbounded or undefined."""
    row = multipliers_at_sizes(fits, "base", {"type": np.array([at_n])}, boot).iloc[0]
    if not (row["k_lo"] > 0 and np.isfinite(row["k_hi"])):
        return WIDEST
    return float(min(row["k_hi"] / row["k_lo"], WIDEST))


def suggest(frame: pd.DataFrame, baseline: str, group: str, n_test: int, *,
            at_n: float | None = None, sims: int = 16, n_boot: int = 100, level: float = 0.95,
            seed: int = 0) -> tuple[pd.DataFrame, str, list[str]]:
    """Candidates ranked by CI-width gain per device-hour (SUGGEST_COLUMNS), the current
    design's line, and warnings. `frame`: standardised results with device_seconds."""
    for name in (baseline, group):
        if name not in set(frame["group"]):
            raise InputError(f"suggest: no rows of {name!r} in the results")
    pair = frame[frame["group"].isin([baseline, group])]
    fits = fit_groups(pair)
    if not (fits[baseline].ok and fits[group].ok):
        raise InputError(f"suggest: {baseline} and {group} need a fitted law each (three "
                         "sizes or more)")
    truth = {"base": fits[baseline], "type": fits[group]}
    spread, warnings = pilot_spread(pair, n_test)
    seed_sd = {"base": spread[baseline], "type": spread[group]}
    sizes = tuple(int(n) for n in sorted(pair["cell_size"].unique()))
    seeds = int(pair.groupby(["group", "cell_size"])["seed"].nunique().min())
    current = Design(sizes, seeds, n_test)
    at_n = float(at_n or _well_conditioned_size(pair, baseline, group, n_boot, level, seed))
    costs = cost_model(pair, (baseline, group))

    def log_widths(design: Design) -> np.ndarray:
        return simulated_log_widths(design, truth, seed_sd, at_n, sims=sims, n_boot=n_boot,
                                    level=level, seed=seed)

    now = log_widths(current)
    rows = []
    for name, design in candidates(current).items():
        if name == "test problems":
            added = more_test_problems_cost(pair, (baseline, group), current)
        else:
            added = (cells_cost(costs, design.sizes, design.seeds)
                     - cells_cost(costs, current.sizes, current.seeds))
        paired = now - log_widths(design)           # > 0: the CI narrows (in log width)
        gain, noise = float(paired.mean()), float(paired.std(ddof=1) / np.sqrt(sims))
        unknown = bool(np.isnan(added))
        rows.append({"candidate": name, "overrides": _overrides(name, design, current),
                     "added_device_seconds": np.nan if unknown else added,
                     "k_width": float(np.exp(np.median(now - paired))),
                     "width_gain": gain, "gain_se": noise,
                     "gain_per_device_hour": _rate(gain, noise, added, unknown)})
    table = pd.DataFrame(rows, columns=SUGGEST_COLUMNS)
    table = table.sort_values("gain_per_device_hour", ascending=False, na_position="last")
    head = (f"{group} vs {baseline}, k at n = {at_n:g}: now sizes {list(sizes)}, {seeds} "
            f"seed(s), n_test {n_test}: expected CI k_hi/k_lo {np.exp(np.median(now)):.3g} "
            f"({sims} simulated sweeps each, {n_boot} resamples)")
    return table.reset_index(drop=True), head, warnings


def _rate(gain: float, noise: float, added: float, unknown: bool) -> float:
    """The rank: the gain's lower bound (gain - 2 SE) per added device-hour; NaN (unranked)
    when the cost is unknown or the gain is not clear of the simulation noise: a cheap
    candidate whose gain may be nothing must not outrank one that surely narrows the CI."""
    low = gain - 2 * noise
    if unknown or added <= 0 or low <= 0:
        return np.nan
    return low / (added / 3600)


def _well_conditioned_size(pair: pd.DataFrame, baseline: str, group: str, n_boot: int,
                           level: float, seed: int) -> float:
    """The largest pilot size at which the pilot's own k CI is bounded (else the smallest):
    k is ill-conditioned where the baseline's curve flattens, and no added cell fixes that."""
    named = pair.assign(group=pair["group"].map({baseline: "base", group: "type"}))
    fits = fit_groups(named)
    boot = bootstrap_fit(named, fits, n_boot=n_boot, level=level, seed=seed)
    sizes = sorted(pair.loc[pair["group"] == group, "cell_size"].unique())
    bounded = [n for n in sizes if k_width(fits, boot, n) < WIDEST]
    return float(bounded[-1] if bounded else sizes[0])


def _overrides(name: str, design: Design, current: Design) -> str:
    if name == "seed":
        return f"grid.seeds=[{','.join(map(str, range(design.seeds)))}]"
    if name == "test problems":
        return f"task.n_test={design.n_test}"
    return f"grid.sizes=[{','.join(map(str, design.sizes))}]"


def describe_suggestions(table: pd.DataFrame, head: str, warnings: list[str]) -> str:
    lines = [head, f"  {'candidate':<14} {'k_hi/k_lo':>9} {'gain':>13} {'+device-s':>10} "
                   f"{'gain/dev-h':>10}  overrides"]
    for r in table.itertuples(index=False):
        cost = "unknown" if np.isnan(r.added_device_seconds) else f"{r.added_device_seconds:.0f}"
        rate = "-" if np.isnan(r.gain_per_device_hour) else f"{r.gain_per_device_hour:.3g}"
        gain = f"{r.width_gain:+.3f}±{2 * r.gain_se:.3f}"
        lines.append(f"  {r.candidate:<14} {r.k_width:>9.3g} {gain:>13} {cost:>10} "
                     f"{rate:>10}  {r.overrides}")
    lines.append("  (gain: how much the CI narrows, in log k_hi/k_lo, ± 2 simulation standard "
                 "errors; ranked by (gain - 2 SE) per device-hour, '-': not clear of the noise or "
                 "cost unknown: test problems need results.csv's eval_device_seconds)")
    lines += [f"warning: {w}" for w in warnings]
    return "\n".join(lines)
