"""Credit assignment checked against the truth: do the Monte Carlo rollouts find the
step where a negative actually went wrong?

The per-step rows (dpo_per_step) rest on the pit the rollouts pick. On the embedded
`arith` task the oracle knows each negative's first wrong line
(`tasks.arith.first_wrong_line`), so the pit's precision and recall can be measured,
per number of rollouts k (the first k of the K each prefix got): a researcher sees
whether the rollouts find the error before trusting a multiplier built on them.
`show CONFIG --stage rollouts` prints the table; the sweep logs it to its MLflow run
and writes `pit_check.csv`. Other tasks have no such oracle: no table.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pandas as pd

from orchestrator.config import Config
from orchestrator.contract import Files
from orchestrator.credit import pit_agreement, rollout_counts
from orchestrator.planning import Plan
from orchestrator.records import read_rows
from orchestrator.store import Outcome
from orchestrator.tasks import TaskSource, make_task

COLUMNS = ("k", "negatives", "with_wrong_line", "pits", "precision", "recall", "early", "late")


def wrong_lines(config: Config, rows: list[dict]) -> dict[int, int | None] | None:
    """Row index -> the oracle's first wrong line of that negative; None without an oracle."""
    if config.task.name != "arith":
        return None
    from orchestrator.tasks.arith import first_wrong_line

    reference = reference_solutions(config.task.source, config.task.n_train)
    return {i: first_wrong_line(reference[row["problem_id"]], row["steps"])
            for i, row in enumerate(rows) if row["problem_id"] in reference}


@functools.lru_cache(maxsize=2)
def reference_solutions(source: TaskSource, n_train: int) -> dict[str, str]:
    """problem id -> the exact solution, for every training problem (built once a sweep)."""
    return {p.id: p.solution for p in make_task(source, n_train, 0).split("train")}


def pit_check(config: Config, rows: list[dict]) -> list[dict] | None:
    """The pit-vs-truth table (COLUMNS, one row per k) of a rollouts artifact's rows."""
    truth = wrong_lines(config, rows)
    if truth is None or not rows:
        return None
    return pit_agreement(rows, truth, config.per_step.pit_rule,
                         rollout_counts(config.per_step.rollouts))


def pit_check_text(table: list[dict], rule: str) -> str:
    def share(value: float) -> str:
        return "-" if math.isnan(value) else f"{value:.2f}"

    lines = [f"pit ({rule}) vs the task's first wrong line, from the first k rollouts of "
             "each prefix:", f"  {'k':>3} {'pits':>5} {'precision':>9} {'recall':>6} "
             f"{'early':>5} {'late':>5}"]
    lines += [f"  {r['k']:>3} {r['pits']:>5} {share(r['precision']):>9} {share(r['recall']):>6} "
              f"{share(r['early']):>5} {share(r['late']):>5}" for r in table]
    first = table[0]
    lines.append(f"  ({first['negatives']} negatives, {first['with_wrong_line']} with a wrong "
                 "line; early: a right prefix judged hopeless, late: the pit after the error)")
    return "\n".join(lines)


def pit_check_table(config: Config, plan: Plan, outcomes: dict[str, Outcome]
                    ) -> pd.DataFrame | None:
    """The table of every finished rollouts stage of `plan`, with its n and seed: the sweep's
    pit_check.csv. None without an oracle or rollouts."""
    found = []
    for spec in plan.specs:
        if spec.stage != "rollouts" or spec.key not in outcomes:
            continue
        rows = read_rows(Path(outcomes[spec.key].artifact_dir) / Files.ROLLOUTS)
        at = {"n": int(spec.tag_dict["n"]), "seed": int(spec.tag_dict["seed"])}
        found += [{**at, **row} for row in pit_check(config, rows) or []]
    return pd.DataFrame(found, columns=["n", "seed", *COLUMNS]) if found else None


def pit_check_metrics(table: pd.DataFrame) -> dict[int, dict[str, float]]:
    """n -> pit_precision_k<k> and pit_recall_k<k> (mean over seeds): curves against n."""
    means = table.groupby(["n", "k"])[["precision", "recall"]].mean().reset_index()
    by_n: dict[int, dict[str, float]] = {}
    for row in means.itertuples(index=False):
        by_n.setdefault(int(row.n), {}).update({f"pit_precision_k{row.k}": row.precision,
                                                f"pit_recall_k{row.k}": row.recall})
    return by_n
