"""Fixtures for the analysis tests: the shared real data, and synthetic sweeps with
known laws written in the exact format the sweep writes (results.csv and
per_problem.csv), so tests exercise the real readers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

# E, A, alpha of the baseline; every other type is the baseline at k times the data.
BASELINE_LAW = (0.10, 3.0, 0.5)
TRUE_K = {"sft_teacher": 1.0, "rft_self": 2.0, "dpo_negative": 1.0, "dpo_per_step": 8.0}
SIZES = (100, 200, 400, 800, 1600, 3200)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (the shared real-data folder)")
    return SHARED_DATA.resolve()


def law_error(n, k: float = 1.0, law=BASELINE_LAW) -> np.ndarray:
    e, a, alpha = law
    return e + a * (k * np.asarray(n, float)) ** -alpha


def synthetic_sweep(rng: np.random.Generator, *, sizes=SIZES, seeds=3, n_problems=600,
                    seed_sigma=0.05, true_k=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results and per-problem tables of a sweep whose types follow the baseline law at k n.

    Test problems have a difficulty u ~ U(0, 1) shared by every cell; a cell whose
    model has error rate p (the law times a per-seed log-normal factor) gets a
    problem right iff u > p, so per-problem results are exactly consistent with
    test_error and paired across cells as in a real sweep.
    """
    true_k = TRUE_K if true_k is None else true_k
    u = rng.random(n_problems)
    rows, problems = [], []
    for data_type, k in true_k.items():
        for n in sizes:
            for seed in range(seeds):
                p = law_error(n, k) * np.exp(rng.normal(0, seed_sigma))
                correct = (u > p).astype(int)
                rows.append({"experiment": "synthetic", "data_type": data_type, "n": n,
                             "seed": seed, "test_error": 1 - correct.mean(),
                             "pass_at_1": correct.mean(), "n_test": n_problems,
                             "train_tokens": 250.0 * n * (1 + (k > 1)),
                             "device_seconds": 0.05 * n * (1 + np.log2(k))})
                problems.append(pd.DataFrame({
                    "experiment": "synthetic", "data_type": data_type, "n": n, "seed": seed,
                    "problem_id": [f"q{j}" for j in range(n_problems)], "correct": correct}))
    return pd.DataFrame(rows), pd.concat(problems, ignore_index=True)


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    """A folder holding results.csv and per_problem.csv of a small synthetic sweep."""
    results, per_problem = synthetic_sweep(np.random.default_rng(2024), n_problems=300)
    results.to_csv(tmp_path / "results.csv", index=False)
    per_problem.to_csv(tmp_path / "per_problem.csv", index=False)
    return tmp_path


@pytest.fixture
def make_sweep():
    """`synthetic_sweep` as a fixture (test modules cannot import conftest under importlib)."""
    return synthetic_sweep


@pytest.fixture
def true_law():
    """(law_error function, baseline (E, A, alpha), true multipliers by data type)."""
    return law_error, BASELINE_LAW, TRUE_K
