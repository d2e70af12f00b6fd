"""Planning: an experiment grid becomes a DAG of content-addressed stages.

Pure: `expand_grid(config)` returns the same `Plan` for the same config on any
machine, without Ray, MLflow, torch, a GPU or a model. `plan` holds the types
and cache keys, `chains` the wiring of each data type's stages (the DAG per
(n, seed) of ../shared/DESIGN.md).
"""

from __future__ import annotations

from orchestrator.config import Config
from orchestrator.contract import GridPoint
from orchestrator.planning.chains import ROWS, CellBuilder, add_shared_stages
from orchestrator.planning.plan import Cell, Plan, StageSpec, cache_key, describe_plan, make_spec


def expand_grid(config: Config) -> Plan:
    """The whole sweep as a de-duplicated, topologically ordered plan."""
    plan = Plan()
    shared = add_shared_stages(config, plan)
    for seed in config.grid.seeds:
        for n in config.grid.sizes:
            cell = CellBuilder(config, plan, shared, GridPoint(n, seed))
            for data_type in config.grid.data_types:
                eval_key = ROWS[data_type](cell)
                plan.cells.append(Cell(data_type, n, seed, eval_key, tuple(plan.ancestors(eval_key))))
    return plan


__all__ = ["Cell", "Plan", "StageSpec", "cache_key", "describe_plan", "expand_grid", "make_spec"]
