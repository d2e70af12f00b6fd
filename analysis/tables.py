"""Reading and checking the tables the analysis consumes.

Every fitter works on a *standardised* frame with columns `group`, `size`,
`error`, `seed` (plus whatever else the input carried, e.g. cost columns), so the
same code fits a sweep's results.csv (data_type, n, test_error), MLflow runs, or
anyone's scaling data with other column names. Which input column is which is
said once, by a `Columns` (or, for the 2-D law, a `PointColumns`) value.

Bad input raises InputError with one line naming the file, the column and the
CSV line (header = line 1), which the CLI prints before exiting with code 2.
This module does the I/O of reading; it never writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

# wall_seconds is left out by default: device_seconds already is wall time x devices reserved.
COST_COLUMNS = ("train_tokens", "generated_tokens", "device_seconds")
PER_PROBLEM_FILE = "per_problem.csv"
# read_csv numbers a table's rows by their CSV line (the header is line 1) and names
# that index CSV_LINE, so error messages can point into the file.
CSV_LINE = "csv_line"


@dataclass(frozen=True, kw_only=True)
class Columns:
    """The names a results table gives to group, size, error and seed."""

    group: str = field(default="data_type", metadata={"help": "column of the group (data type)"})
    size: str = field(default="n", metadata={"help": "column of the size fitted against"})
    error: str = field(default="test_error", metadata={"help": "column of the error"})
    seed: str = field(default="seed",
                      metadata={"help": "column of the replicate (optional in the CSV)"})


@dataclass(frozen=True, kw_only=True)
class PointColumns:
    """The names a table of 2-D law points gives to model size, data size and loss."""

    n: str = field(default="Model Size", metadata={"help": "model size column"})
    d: str | None = field(default=None,
                          metadata={"help": "training tokens column; none: D = FLOP / (6 N)"})
    flop: str = field(default="Training FLOP",
                      metadata={"help": "training FLOP column, used when there is no tokens "
                                        "column"})
    loss: str = field(default="loss", metadata={"help": "loss column"})


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
    frame.index = pd.RangeIndex(2, len(frame) + 2, name=CSV_LINE)
    return frame


def _line(frame: pd.DataFrame, position: int) -> str:
    """The CSV line of a row (see read_csv), or the row label for in-memory frames."""
    if frame.index.name == CSV_LINE:
        return f"line {frame.index[position]}"
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


def standardize(frame: pd.DataFrame, columns: Columns = Columns(), *,
                source: str = "results") -> pd.DataFrame:
    """Checked copy with columns group, size, error, seed first, the rest kept as they were.

    `cell_size` repeats `size` and names the grid cell (with group and seed) even
    when `size` is later swapped for a cost column to fit against compute.

    Sizes must be > 0 and errors >= 0 (errors of exactly 0 cannot be fit in log
    space; `drop_zero_errors` removes them with a warning). Without a seed column
    each row of a (group, size) cell counts as its own seed.
    """
    require_columns(frame, [columns.group, columns.size, columns.error], source)
    size = numeric_column(frame, columns.size, source, positive=True)
    error = numeric_column(frame, columns.error, source, at_least=0.0)
    group = frame[columns.group].astype(str)
    if columns.seed in frame.columns:
        seed = frame[columns.seed]
    else:
        seed = frame.groupby([group, size]).cumcount()
    rest = frame.drop(columns=[c for c in ("group", "size", "error", "seed") if c in frame])
    core = pd.DataFrame({"group": group, "size": size, "error": error, "seed": seed,
                         "cell_size": size})
    rest = rest.drop(columns=[c for c in ("cell_size",) if c in rest])
    return pd.concat([core, rest], axis=1).reset_index(drop=True)


def drop_zero_errors(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    zero = frame["error"] <= 0
    if not zero.any():
        return frame, []
    cells = ", ".join(f"{g} n={s:g}" for g, s in frame.loc[zero, ["group", "size"]]
                      .drop_duplicates().itertuples(index=False))
    return frame[~zero].reset_index(drop=True), [
        f"{int(zero.sum())} row(s) with error 0 cannot be fit in log space and were left out "
        f"({cells})"]


def load_results(path: str | Path, columns: Columns = Columns()) -> pd.DataFrame:
    """A results CSV, checked and standardised (see `standardize`)."""
    return standardize(read_csv(path), columns, source=str(path))


def load_per_problem(path: str | Path, columns: Columns = Columns()) -> pd.DataFrame:
    """per_problem.csv as columns group, size, seed, problem_id, correct (0/1).

    Its group, size and seed columns have the results table's names; its error
    column does not matter (there is none: `correct` is per problem)."""
    frame = read_csv(path)
    source = str(path)
    require_columns(frame, [columns.group, columns.size, columns.seed, "problem_id", "correct"],
                    source)
    correct = numeric_column(frame, "correct", source)
    bad = ~correct.isin([0.0, 1.0])
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{source}: column 'correct', {_line(frame, i)}: expected 0 or 1, "
                         f"got {_shown(frame['correct'].iloc[i])}")
    return pd.DataFrame({"group": frame[columns.group].astype(str),
                         "size": numeric_column(frame, columns.size, source, positive=True),
                         "seed": frame[columns.seed],
                         "problem_id": frame["problem_id"].astype(str),
                         "correct": correct}).reset_index(drop=True)


def find_per_problem(results_path: str | Path) -> Path | None:
    """The per_problem.csv the sweep writes beside results.csv, if there is one."""
    candidate = Path(results_path).with_name(PER_PROBLEM_FILE)
    return candidate if candidate.is_file() else None


def results_from_mlflow_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """A results table from `mlflow.search_runs(...)` output (evaluate-stage child runs).

    Takes `tags.data_type`, `tags.n`, `tags.seed` and every `metrics.*` column of the
    evaluations' stage runs (not their failure runs); the caller imports mlflow, this
    package never does.
    """
    require_columns(runs, ["tags.data_type", "tags.n", "tags.seed"], "MLflow runs")
    if "tags.stage" in runs.columns:
        runs = runs[runs["tags.stage"] == "evaluate"]
    if "tags.synthscale_kind" in runs.columns:
        # A failed evaluation's run (kind `failure`) carries the cell's tags but no metrics.
        runs = runs[runs["tags.synthscale_kind"] != "failure"]
    metrics = {c: c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics.")}
    # The sweep logs a cell's whole-chain cost as chain_* on its evaluate run
    # (the unprefixed names are the evaluation's own cost): prefer the chain, and keep the
    # evaluation's own device time as results.csv does (eval_device_seconds).
    for name in COST_COLUMNS:
        if f"metrics.chain_{name}" in runs.columns:
            metrics.pop(f"metrics.{name}", None)
            metrics[f"metrics.chain_{name}"] = name
    if "metrics.chain_device_seconds" in runs.columns and "metrics.device_seconds" in runs.columns:
        metrics["metrics.device_seconds"] = "eval_device_seconds"
    out = runs[list(metrics)].rename(columns=metrics)
    out.insert(0, "seed", pd.to_numeric(runs["tags.seed"], errors="coerce"))
    out.insert(0, "n", pd.to_numeric(runs["tags.n"], errors="coerce"))
    out.insert(0, "data_type", runs["tags.data_type"])
    return out.reset_index(drop=True)


def cost_columns(frame: pd.DataFrame) -> list[str]:
    """The cost columns present in a standardised frame."""
    return [c for c in COST_COLUMNS if c in frame.columns]


def load_points_2d(path: str | Path, columns: PointColumns = PointColumns()) -> pd.DataFrame:
    """Model-size x data-size points as columns N, D, loss (all checked > 0).

    D is the `columns.d` column when given, else `columns.flop` / (6 N) (training
    FLOP C = 6 N D, the approximation Hoffmann et al. and Epoch AI use).
    """
    frame = read_csv(path)
    source = str(path)
    require_columns(frame, [columns.n, columns.d or columns.flop, columns.loss], source)
    n = numeric_column(frame, columns.n, source, positive=True)
    if columns.d:
        d = numeric_column(frame, columns.d, source, positive=True)
    else:
        d = numeric_column(frame, columns.flop, source, positive=True) / (6 * n)
    loss = numeric_column(frame, columns.loss, source, positive=True)
    return pd.DataFrame({"N": n, "D": d, "loss": loss}).reset_index(drop=True)
