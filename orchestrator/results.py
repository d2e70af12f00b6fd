"""The sweep's results tables, rebuilt from stage artifacts (never appended).

`results.csv`: one row per grid cell (data_type, n, seed) with test_error,
pass@1 (and pass@k), the examples and optimiser steps of the training that made
the evaluated model (`train_examples`, `train_steps`), and the cost of the
cell's whole stage chain:

- `train_tokens`, `generated_tokens`, `wall_seconds` (the cost contract every
  stage result carries, `contract.StageResult`): summed over every stage
  that produced the cell's model, shared upstream stages included in full,
  except: the base model (common to every cell; not synthetic-data cost) and
  the evaluation (measuring a model is not making it) are left out, and the
  teacher pool counts in proportion n / pool size (the cell uses a prefix).
- `device_seconds`: each stage's wall seconds times the devices it reserved
  (GPUs, or CPUs for a CPU-only stage).
- `eval_device_seconds`: the same for the cell's evaluation alone (left out of the
  above): what measuring the cell on `n_test` problems costs, so that planning
  (`synthscale suggest`) can price more test problems.

`per_problem.csv`: one row per cell and test problem (`correct` 0/1), for
bootstrapping over test problems.

The tables are rewritten whole from the artifacts every time, so a resumed
sweep can never duplicate a row. This module must not import ray or mlflow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from orchestrator.contract import Files, In, StageResult
from orchestrator.files import write_atomically
from orchestrator.planning import Cell, Plan, StageSpec
from orchestrator.stages.evaluate import EvalResult
from orchestrator.store import Outcome

# Stages whose cost a cell does not count: the base model is common to every cell (not
# synthetic-data cost) and measuring a model is not making it.
NOT_CELL_COST = ("base_model", "evaluate")
COST_FIELDS = ("train_tokens", "generated_tokens", "wall_seconds")   # of StageResult

RESULT_COLUMNS = ["experiment", "data_type", "n", "seed", "test_error", "pass_at_1", "pass_at_k",
                  "k", "n_test", "model", "train_examples", "train_steps", "train_tokens",
                  "generated_tokens", "wall_seconds", "device_seconds", "eval_device_seconds",
                  "eval_key"]


def devices_reserved(spec: StageSpec) -> float:
    return spec.resources.num_gpus or spec.resources.num_cpus or 1.0


def chain_cost(plan: Plan, cell: Cell, outcomes: dict[str, Outcome], pool_size: int) -> dict:
    """The cost of making a cell's model: each StageResult cost field summed over its chain,
    and device_seconds; the teacher pool counts in proportion n / pool size."""
    cost = dict.fromkeys((*COST_FIELDS, "device_seconds"), 0.0)
    for key in cell.chain:
        spec = plan.get(key)
        if spec.stage in NOT_CELL_COST:
            continue
        share = cell.n / pool_size if spec.stage == "teacher_generate" else 1.0
        result: StageResult = outcomes[key].result
        for name in COST_FIELDS:
            cost[name] += share * float(getattr(result, name))
        cost["device_seconds"] += share * result.wall_seconds * devices_reserved(spec)
    return {k: round(v, 3) for k, v in cost.items()}


def final_training(plan: Plan, cell: Cell, outcomes: dict[str, Outcome]) -> dict[str, int]:
    """Examples and optimiser steps of the stage that trained the evaluated model: rows
    trained on different amounts of data (RFT's own positives, DPO's pairs) differ in
    both, and a comparison of rows should say so (`rft.match_sft_steps`)."""
    model_key = dict(plan.get(cell.eval_key).inputs).get(In.MODEL)
    result = outcomes[model_key].result if model_key in outcomes else None
    return {"train_examples": int(getattr(result, "examples", 0)),
            "train_steps": int(getattr(result, "steps", 0))}


def results_table(plan: Plan, outcomes: dict[str, Outcome], experiment: str, model: str,
                  pool_size: int) -> pd.DataFrame:
    """Rows for every cell whose evaluation finished."""
    rows = []
    for cell in plan.cells:
        if cell.eval_key not in outcomes or any(k not in outcomes for k in cell.chain):
            continue
        ev = outcomes[cell.eval_key].result
        assert isinstance(ev, EvalResult), f"{cell.eval_key[:12]} is not an evaluation"
        rows.append({
            "experiment": experiment, "data_type": cell.data_type, "n": cell.n, "seed": cell.seed,
            "test_error": ev.test_error, "pass_at_1": ev.pass_at_1,
            "pass_at_k": ev.pass_at_k, "k": ev.k, "n_test": ev.n_test,
            "model": model, **final_training(plan, cell, outcomes),
            **chain_cost(plan, cell, outcomes, pool_size),
            "eval_device_seconds": round(ev.wall_seconds
                                         * devices_reserved(plan.get(cell.eval_key)), 3),
            "eval_key": cell.eval_key[:16],
        })
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def per_problem_table(plan: Plan, outcomes: dict[str, Outcome], experiment: str) -> pd.DataFrame:
    frames = []
    for cell in plan.cells:
        if cell.eval_key not in outcomes:
            continue
        path = Path(outcomes[cell.eval_key].artifact_dir) / Files.PREDICTIONS
        with path.open() as f:
            preds = [json.loads(line) for line in f]
        frames.append(pd.DataFrame({
            "experiment": experiment, "data_type": cell.data_type, "n": cell.n, "seed": cell.seed,
            "problem_id": [p["problem_id"] for p in preds],
            "correct": [int(p["correct"]) for p in preds]}))
    columns = ["experiment", "data_type", "n", "seed", "problem_id", "correct"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def write_atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    """A reader (or a killed sweep's successor) sees the old table or the new one, whole."""
    write_atomically(path, lambda tmp: frame.to_csv(tmp, index=False))


def summary_table(results: pd.DataFrame) -> str:
    """test_error per (data_type, n): mean ± sd over seeds, as text."""
    if results.empty:
        return "(no finished evaluations)"
    grouped = results.groupby(["data_type", "n"])["test_error"]
    table = grouped.agg(["mean", "std", "count"]).reset_index()
    lines = [f"{'data_type':<14} {'n':>7} {'test_error':>10} {'sd':>7} {'seeds':>5}"]
    for row in table.itertuples():
        sd = "-" if row.count < 2 else f"{row.std:.3f}"
        lines.append(f"{row.data_type:<14} {row.n:>7} {row.mean:>10.3f} {sd:>7} {row.count:>5}")
    return "\n".join(lines)
