"""Power analysis on constructed pilots whose answer is known: no seed spread and a huge
test set detect tiny effects; a large spread detects only large ones; more seeds and more
test problems never detect less. Each table is hundreds of real bootstraps: the two that
run down whole ladders are marked slow (about a minute each on 2 idle cores)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.power import Grid, PowerOptions, pilot_spread, power_table
from analysis.tables import standardize

from .conftest import law_error

SIZES = (100, 400, 1600)
# Short ladders and few simulated sweeps keep each table to seconds; the effects tested
# are far apart on them.
LADDERS = {"k_ladder": (1.25, 2.0, 4.0, 8.0), "d_ladder": (0.005, 0.02, 0.05, 0.1, 0.2)}
FAST = PowerOptions(sims=8, n_boot=100, seed=1, **LADDERS)


def pilot(log_sd: float = 0.0, n_test: int = 300) -> pd.DataFrame:
    """Two seeds per cell at exp(-+log_sd) times the baseline law (sample sd = log_sd * sqrt 2)."""
    rows = [{"data_type": t, "n": n, "seed": s, "n_test": n_test,
             "test_error": float(law_error(n)) * np.exp(log_sd * (1 if s else -1))}
            for t in ("sft_teacher", "rft_self") for n in SIZES for s in (0, 1)]
    return standardize(pd.DataFrame(rows))


def grid(seeds=2, n_test=300) -> Grid:
    return Grid(SIZES, seeds, n_test, ("sft_teacher", "rft_self"))


def test_pilot_spread_is_the_seed_sd_of_log_error():
    spread, warnings = pilot_spread(pilot(0.1), n_test=300)
    assert spread["rft_self"] == pytest.approx(0.1 * np.sqrt(2), rel=1e-6) and not warnings
    assert pilot_spread(pilot(0.0), n_test=300)[0]["sft_teacher"] == 0.0
    one_seed = pilot(0.1)[lambda f: f["seed"] == 0]
    spread, warnings = pilot_spread(one_seed, n_test=300)
    assert spread["rft_self"] == 0.0 and "one seed per cell" in warnings[0]


def test_no_spread_and_a_huge_test_set_detect_the_smallest_effects():
    table, _ = power_table(pilot(0.0), grid(n_test=20000), 300, FAST)
    assert (table["min_k"] == FAST.k_ladder[0]).all()
    assert (table["min_d"] == FAST.d_ladder[0]).all()
    assert (table["power_k2"] == 1.0).all()


@pytest.mark.slow
def test_a_large_seed_spread_detects_only_large_effects():
    quiet, _ = power_table(pilot(0.0), grid(n_test=20000), 300, FAST)
    noisy, _ = power_table(pilot(0.0), grid(n_test=20000), 300,
                           PowerOptions(sims=8, n_boot=100, seed=1, seed_sd=0.4, **LADDERS))
    assert (noisy["min_d"].fillna(np.inf) >= 10 * quiet["min_d"]).all()
    assert noisy["power_k2"].max() < 0.8


@pytest.mark.slow
def test_more_seeds_and_more_test_problems_never_detect_less():
    def mean_min_d(seeds, n_test, seed_sd):
        options = PowerOptions(sims=8, n_boot=100, seed=1, seed_sd=seed_sd, **LADDERS)
        table, _ = power_table(pilot(0.0), grid(seeds, n_test), 300, options)
        return table["min_d"].fillna(1.0).mean()

    assert mean_min_d(2, 3000, 0.0) <= mean_min_d(2, 100, 0.0)
    # 3 seeds against 9: with 2, the bootstrap's seed intervals are too narrow (two values
    # say little about a spread), which would flatter the small grid
    assert mean_min_d(9, 300, 0.1) <= mean_min_d(3, 300, 0.1)
