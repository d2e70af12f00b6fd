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

import math

from orchestrator.config import Config
from orchestrator.credit import pit_agreement, rollout_counts
from orchestrator.tasks import make_task

COLUMNS = ("k", "negatives", "with_wrong_line", "pits", "precision", "recall", "early", "late")


def wrong_lines(config: Config, rows: list[dict]) -> dict[int, int | None] | None:
    """Row index -> the oracle's first wrong line of that negative; None without an oracle."""
    if config.task.name != "arith":
        return None
    from orchestrator.tasks.arith import first_wrong_line

    task = make_task(config.task.source, config.task.n_train, 0)
    reference = {p.id: p.solution for p in task.split("train")}
    return {i: first_wrong_line(reference[row["problem_id"]], row["steps"])
            for i, row in enumerate(rows) if row["problem_id"] in reference}


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
