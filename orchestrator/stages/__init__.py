"""The stage registry: name -> plain function, inputs, result type, code version,
resource group.

A stage is `run(params, inputs, out_dir) -> Result` (see `contract`): a typed
config slice its module builds (`from_config`) and the artifact folders of its
named inputs in, files in `out_dir` and a typed `StageResult` out. Stages know
nothing of Ray, MLflow, the runner or planning (they must not import them);
`store.run_cached` and the runner wrap them, and `orchestrator.planning` wires
them into per-cell chains.

Bump a stage's VERSION whenever a change to its code would change its output:
the version is part of the cache key, so finished artifacts of the old code are
then recomputed instead of silently reused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

from orchestrator.contract import StageResult
from orchestrator.stages import (
    base_model,
    dpo,
    evaluate,
    human_data,
    pairs,
    rft_data,
    rollouts,
    sample,
    sft,
    step_pairs,
    teacher,
)


@dataclass(frozen=True)
class StageDef:
    name: str
    run: Callable[..., StageResult]
    inputs: tuple[str, ...]         # the input names `run` reads (`contract.In`)
    result_type: type[StageResult]
    version: str
    resource_group: str             # the entry of cluster.resources it runs with


def _define(name: str, module: Any, resource_group: str | None = None) -> StageDef:
    result_type = get_type_hints(module.run)["return"]
    return StageDef(name, module.run, module.INPUTS, result_type, module.VERSION,
                    resource_group or name)


STAGES: dict[str, StageDef] = {
    d.name: d
    for d in (
        _define("base_model", base_model),
        _define("teacher_generate", teacher),
        _define("human_data", human_data, "prepare"),
        _define("sft", sft),
        _define("sample", sample),
        _define("rft_data", rft_data, "prepare"),
        _define("pairs", pairs, "prepare"),
        _define("rollouts", rollouts),
        _define("step_pairs", step_pairs, "prepare"),
        _define("dpo", dpo),
        _define("evaluate", evaluate),
    )
}
