"""The synthetic data checked against the truth: how much of what a row trains on is a
correct solution, and how far plain DPO's pairs already are per-step pairs.

A self-generated positive or a pair's chosen side counts as correct by its final answer;
on the embedded `arith` task the oracle (`tasks.arith.first_wrong_line`) also says whether
every step is right, so for each finished stage of the sweep:
- `rft_data`: of the self-generated positives RFT kept (not the teacher's), the share with
  no wrong line (`valid`). The rest reach the right answer through a wrong step.
- `pairs` (dpo_negative): the share of chosen sides with no wrong line (`valid`), and the
  share of pairs whose two sides first differ exactly at the rejected side's first wrong
  line (`first_diff_at_wrong_line`): for those, plain DPO already is per-step DPO.
The sweep writes `data_check.csv` and logs it to its MLflow run (README, "The embedded
study", reads it). Other tasks have no oracle: no table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.config import Config
from orchestrator.contract import Files
from orchestrator.credit_check import reference_solutions
from orchestrator.planning import Plan
from orchestrator.records import read_rows
from orchestrator.store import Outcome
from orchestrator.tasks.base import split_steps

COLUMNS = ("n", "seed", "stage", "rows", "valid", "first_diff_at_wrong_line")
CHECKED = {"rft_data": Files.DATA, "pairs": Files.PAIRS}


def first_difference(a: list[str], b: list[str]) -> int:
    """The 1-based index of the first step where two step lists differ (one past the
    shorter's end when one is a prefix of the other)."""
    pairs = enumerate(zip(a, b, strict=False))       # the shorter one's steps
    return 1 + next((i for i, (x, y) in pairs if x != y), min(len(a), len(b)))


def check_rows(stage: str, rows: list[dict], reference: dict[str, str]) -> dict | None:
    """`COLUMNS` less n and seed for one artifact's rows; None when nothing is checkable."""
    from orchestrator.tasks.arith import first_wrong_line

    rows = [r for r in rows if r["problem_id"] in reference]
    if stage == "rft_data":
        own = [r for r in rows if r.get("source") != "teacher"]
        if not own:
            return None
        valid = sum(first_wrong_line(reference[r["problem_id"]], split_steps(r["completion"]))
                    is None for r in own)
        return {"stage": stage, "rows": len(own), "valid": valid / len(own),
                "first_diff_at_wrong_line": float("nan")}
    if not rows:
        return None
    valid = at_wrong_line = 0
    for r in rows:
        chosen, rejected = split_steps(r["chosen"]), split_steps(r["rejected"])
        valid += first_wrong_line(reference[r["problem_id"]], chosen) is None
        bad = first_wrong_line(reference[r["problem_id"]], rejected)
        at_wrong_line += bad is not None and bad == first_difference(chosen, rejected)
    return {"stage": stage, "rows": len(rows), "valid": valid / len(rows),
            "first_diff_at_wrong_line": at_wrong_line / len(rows)}


def data_check_table(config: Config, plan: Plan, outcomes: dict[str, Outcome]
                     ) -> pd.DataFrame | None:
    """One row per finished rft_data and pairs stage of `plan`: the sweep's
    data_check.csv. None without an oracle or such stages."""
    if config.task.name != "arith":
        return None
    reference = reference_solutions(config.task.source, config.task.n_train)
    found = []
    for spec in plan.specs:
        if spec.stage not in CHECKED or spec.key not in outcomes:
            continue
        rows = read_rows(Path(outcomes[spec.key].artifact_dir) / CHECKED[spec.stage])
        checked = check_rows(spec.stage, rows, reference)
        if checked is not None:
            found.append({"n": int(spec.tag_dict["n"]), "seed": int(spec.tag_dict["seed"]),
                          **checked})
    return pd.DataFrame(found, columns=list(COLUMNS)) if found else None
