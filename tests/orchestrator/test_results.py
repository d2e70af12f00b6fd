"""Cost accounting and the results table, from typed stage results (no Ray, no model)."""

from __future__ import annotations

import pytest

from orchestrator.config import config_from_dict
from orchestrator.contract import StageResult
from orchestrator.planning import expand_grid
from orchestrator.results import chain_cost, results_table
from orchestrator.stages import STAGES
from orchestrator.stages.evaluate import EvalResult
from orchestrator.store import Outcome

CONFIG = config_from_dict({"grid": {"data_types": ["sft_teacher", "rft_self"], "sizes": [100, 200]},
                           "task": {"n_train": 1000},
                           "cluster": {"resources": {"sft": {"num_cpus": 2}}}})
TOKENS = {"base_model": 1_000_000, "teacher_generate": 2000, "sft": 300, "sample": 40,
          "rft_data": 0, "evaluate": 5000}


def result_for(stage: str) -> StageResult:
    """A typed result with made-up numbers: tokens by stage, 10 s of wall time each."""
    result_type = STAGES[stage].result_type
    if result_type is EvalResult:
        return EvalResult(0.25, 0.75, float("nan"), 0, 40, 0, generated_tokens=TOKENS[stage],
                          wall_seconds=10.0)
    cost = {"train_tokens": TOKENS[stage], "generated_tokens": TOKENS[stage], "wall_seconds": 10.0}
    values = {f: 0 for f in result_type.__dataclass_fields__ if f not in cost}
    if "loss_curve" in values:
        values["loss_curve"] = []
    return result_type(**values, **cost)


@pytest.fixture
def finished():
    plan = expand_grid(CONFIG)
    outcomes = {s.key: Outcome(s.key, s.stage, "/x", result_for(s.stage), False, "n1", 10.0)
                for s in plan.specs}
    return plan, outcomes


def test_a_cells_cost_sums_its_chain_with_the_pool_counted_by_its_share(finished):
    plan, outcomes = finished
    sft_cell = next(c for c in plan.cells if c.data_type == "sft_teacher" and c.n == 100)
    cost = chain_cost(plan, sft_cell, outcomes, CONFIG.pool_size)
    share = 100 / 200                          # the cell uses the first 100 of a 200-record pool
    # base model and evaluation are not the cell's cost; the teacher pool counts by its share
    assert cost["train_tokens"] == share * 2000 + 300
    assert cost["wall_seconds"] == share * 10 + 10
    assert cost["device_seconds"] == share * 10 * 1 + 10 * 2     # sft reserves 2 CPUs

    rft_cell = next(c for c in plan.cells if c.data_type == "rft_self" and c.n == 200)
    cost = chain_cost(plan, rft_cell, outcomes, CONFIG.pool_size)
    # pool (all of it), teacher-SFT, self-samples, RFT data, RFT model
    assert cost["generated_tokens"] == 2000 + 300 + 40 + 0 + 300


def test_results_table_has_one_row_per_finished_cell(finished):
    plan, outcomes = finished
    table = results_table(plan, outcomes, "exp", "tiny", CONFIG.pool_size)
    assert len(table) == len(plan.cells) == 4
    assert set(table["test_error"]) == {0.25} and set(table["n_test"]) == {40}
    missing = plan.cells[0].chain[2]           # an unfinished stage drops the cells it feeds
    del outcomes[missing]
    partial = results_table(plan, outcomes, "exp", "tiny", CONFIG.pool_size)
    assert len(partial) == len([c for c in plan.cells if missing not in c.chain]) < 4
