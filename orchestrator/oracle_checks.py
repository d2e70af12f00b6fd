"""The sweep's end-of-run checks against the arith oracle: the per-step pits
(`credit_check`: pit_check.csv, and pit_precision_k<k> / pit_recall_k<k> against n on the
sweep's MLflow run) and the training data (`data_check`: data_check.csv). Each table is
on disk whatever the tracker does; a tracking error is recorded, never raised."""

from __future__ import annotations

from pathlib import Path

from orchestrator.config import Config
from orchestrator.credit_check import pit_check_metrics, pit_check_table
from orchestrator.data_check import data_check_table
from orchestrator.errors import one_line
from orchestrator.planning import Plan
from orchestrator.results import write_atomic_csv
from orchestrator.store import Outcome


def log_tables(tracker, errors: list[str], tables: dict[str, Path]) -> bool:
    """Log tables to the sweep's run unless tracking has already failed (`errors`, the
    sweep's tracking errors, gets this one's too); False when they were not logged."""
    if errors:
        return False
    try:
        tracker.log_sweep_tables(tables)
    except Exception as exc:  # noqa: BLE001 - the tables are on disk either way
        errors.append(one_line(exc))
        return False
    return True


def check_credit(config: Config, plan: Plan, outcomes: dict[str, Outcome], tracker,
                 errors: list[str]) -> Path | None:
    """The per-step rows' pits against the task's first wrong lines, so the rollouts are
    checked before the 8x is trusted; and the training data against the same truth.
    Returns pit_check.csv's path, None without an oracle or rollouts."""
    data = data_check_table(config, plan, outcomes)
    if data is not None:
        data_path = config.output_dir / "data_check.csv"
        write_atomic_csv(data, data_path)
        log_tables(tracker, errors, {"data_check": data_path})
    table = pit_check_table(config, plan, outcomes)
    if table is None:
        return None
    path = config.output_dir / "pit_check.csv"
    write_atomic_csv(table, path)
    if log_tables(tracker, errors, {"pit_check": path}):
        try:
            for n, metrics in pit_check_metrics(table).items():
                tracker.log_sweep_metrics(metrics, step=n)
        except Exception as exc:  # noqa: BLE001 - the table is on disk either way
            errors.append(one_line(exc))
    return path
