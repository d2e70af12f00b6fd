"""Reading and checking the tables the analysis consumes.

Every fitter works on a *standardised* frame with columns `group`, `size`,
`error`, `seed` (plus whatever else the input carried, e.g. cost columns), so the
same code fits a sweep's results.csv (data_type, n, test_error), MLflow runs, or
anyone's scaling data with other column names.

Bad input raises InputError with one line naming the file, the column and the
CSV line (header = line 1), which the CLI prints before exiting with code 2.
This module does the I/O of reading; it never writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

# wall_seconds is left out by default: device_seconds already is wall time x devices reserved.
COST_COLUMNS = ("train_tokens", "generated_tokens", "device_seconds")
PER_PROBLEM_FILE = "per_problem.csv"


class InputError(ValueError):
    """Unusable input; the message is one line for the user."""


def read_csv(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from exc
    if frame.empty:
        raise InputError(f"{path}: no data rows")
    return frame


def _line(frame: pd.DataFrame, position: int) -> str:
    """The CSV line of a row (header is line 1), or the row label for in-memory frames."""
    if frame.attrs.get("from_csv"):
        return f"line {position + 2}"
    return f"row {frame.index[position]}"


def _shown(value) -> str:
    """A cell's value as a user wrote it: 'abc', 2, 0.5, or 'an empty cell'."""
    if isinstance(value, str):
        return repr(value)
    if pd.isna(value):
        return "an empty cell"
    return str(value.item() if hasattr(value, "item") else value)


def require_columns(frame: pd.DataFrame, columns, source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(f"{source}: missing column {missing[0]!r} "
                         f"(has: {', '.join(map(str, frame.columns))})")


def numeric_column(frame: pd.DataFrame, column: str, source: str, *, positive: bool = False,
                   at_least: float | None = None) -> pd.Series:
    """The column as floats; InputError naming the first bad line otherwise."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{source}: column {column!r}, {_line(frame, i)}: expected a number, "
                         f"got {_shown(frame[column].iloc[i])}")
    if positive and (values <= 0).any():
        i = int(np.flatnonzero((values <= 0).to_numpy())[0])
        raise InputError(f"{source}: column {column!r}, {_line(frame, i)}: expected a value "
                         f"> 0, got {values.iloc[i]:g}")
    if at_least is not None and (values < at_least).any():
        i = int(np.flatnonzero((values < at_least).to_numpy())[0])
        raise InputError(f"{source}: column {column!r}, {_line(frame, i)}: expected a value "
                         f">= {at_least:g}, got {values.iloc[i]:g}")
    return values.astype(float)


def standardize(frame: pd.DataFrame, *, group_col: str = "data_type", size_col: str = "n",
                error_col: str = "test_error", seed_col: str = "seed",
                source: str = "results") -> pd.DataFrame:
    """Checked copy with columns group, size, error, seed first, the rest kept as they were.

    `cell_size` repeats `size` and names the grid cell (with group and seed) even
    when `size` is later swapped for a cost column to fit against compute.

    Sizes must be > 0 and errors >= 0 (errors of exactly 0 cannot be fit in log
    space; `drop_zero_errors` removes them with a warning). Without a seed column
    each row of a (group, size) cell counts as its own seed.
    """
    require_columns(frame, [group_col, size_col, error_col], source)
    size = numeric_column(frame, size_col, source, positive=True)
    error = numeric_column(frame, error_col, source, at_least=0.0)
    group = frame[group_col].astype(str)
    if seed_col in frame.columns:
        seed = frame[seed_col]
    else:
        seed = frame.groupby([group, size]).cumcount()
    rest = frame.drop(columns=[c for c in ("group", "size", "error", "seed") if c in frame])
    core = pd.DataFrame({"group": group, "size": size, "error": error, "seed": seed,
                         "cell_size": size})
    rest = rest.drop(columns=[c for c in ("cell_size",) if c in rest])
    out = pd.concat([core, rest], axis=1)
    out.attrs.update(frame.attrs, columns={"group": group_col, "size": size_col,
                                           "error": error_col, "seed": seed_col})
    return out.reset_index(drop=True)


def drop_zero_errors(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    zero = frame["error"] <= 0
    if not zero.any():
        return frame, []
    cells = ", ".join(f"{g} n={s:g}" for g, s in frame.loc[zero, ["group", "size"]]
                      .drop_duplicates().itertuples(index=False))
    return frame[~zero].reset_index(drop=True), [
        f"{int(zero.sum())} row(s) with error 0 cannot be fit in log space and were left out "
        f"({cells})"]


def load_results(path: str | Path, *, group_col: str = "data_type", size_col: str = "n",
                 error_col: str = "test_error", seed_col: str = "seed") -> pd.DataFrame:
    """A results CSV, checked and standardised (see `standardize`)."""
    frame = read_csv(path)
    frame.attrs["from_csv"] = True
    frame.attrs["path"] = str(path)
    return standardize(frame, group_col=group_col, size_col=size_col, error_col=error_col,
                       seed_col=seed_col, source=str(path))


def load_per_problem(path: str | Path, *, group_col: str = "data_type", size_col: str = "n",
                     seed_col: str = "seed") -> pd.DataFrame:
    """per_problem.csv as columns group, size, seed, problem_id, correct (0/1)."""
    frame = read_csv(path)
    frame.attrs["from_csv"] = True
    source = str(path)
    require_columns(frame, [group_col, size_col, seed_col, "problem_id", "correct"], source)
    correct = numeric_column(frame, "correct", source)
    bad = ~correct.isin([0.0, 1.0])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{source}: column 'correct', {_line(frame, i)}: expected 0 or 1, "
                         f"got {_shown(frame['correct'].iloc[i])}")
    return pd.DataFrame({"group": frame[group_col].astype(str),
                         "size": numeric_column(frame, size_col, source, positive=True),
                         "seed": frame[seed_col], "problem_id": frame["problem_id"].astype(str),
                         "correct": correct})


def find_per_problem(results_path: str | Path) -> Path | None:
    """The per_problem.csv the sweep writes beside results.csv, if there is one."""
    candidate = Path(results_path).with_name(PER_PROBLEM_FILE)
    return candidate if candidate.is_file() else None


def results_from_mlflow_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """A results table from `mlflow.search_runs(...)` output (evaluate-stage child runs).

    Takes `tags.data_type`, `tags.n`, `tags.seed` and every `metrics.*` column;
    the caller imports mlflow, this package never does.
    """
    require_columns(runs, ["tags.data_type", "tags.n", "tags.seed"], "MLflow runs")
    if "tags.stage" in runs.columns:
        runs = runs[runs["tags.stage"] == "evaluate"]
    metrics = {c: c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
    # The sweep logs a cell's whole-chain cost as chain_* on its evaluate run
    # (the unprefixed names are the evaluation's own cost): prefer the chain.
    for name in COST_COLUMNS:
        if f"metrics.chain_{name}" in runs.columns:
            metrics.pop(f"metrics.{name}", None)
            metrics[f"metrics.chain_{name}"] = name
    out = runs[list(metrics)].rename(columns=metrics)
    out.insert(0, "seed", pd.to_numeric(runs["tags.seed"], errors="coerce"))
    out.insert(0, "n", pd.to_numeric(runs["tags.n"], errors="coerce"))
    out.insert(0, "data_type", runs["tags.data_type"])
    return out.reset_index(drop=True)


def cost_columns(frame: pd.DataFrame) -> list[str]:
    """The cost columns present in a standardised frame."""
    return [c for c in COST_COLUMNS if c in frame.columns]


def load_points_2d(path: str | Path, *, n_col: str = "Model Size", d_col: str | None = None,
                   flop_col: str = "Training FLOP", loss_col: str = "loss") -> pd.DataFrame:
    """Model-size x data-size points as columns N, D, loss (all checked > 0).

    D is the d_col column when given, else flop_col / (6 N) (training FLOP
    C = 6 N D, the approximation Hoffmann et al. and Epoch AI use).
    """
    frame = read_csv(path)
    frame.attrs["from_csv"] = True
    source = str(path)
    require_columns(frame, [n_col, d_col or flop_col, loss_col], source)
    n = numeric_column(frame, n_col, source, positive=True)
    if d_col:
        d = numeric_column(frame, d_col, source, positive=True)
    else:
        d = numeric_column(frame, flop_col, source, positive=True) / (6 * n)
    loss = numeric_column(frame, loss_col, source, positive=True)
    return pd.DataFrame({"N": n, "D": d, "loss": loss})
