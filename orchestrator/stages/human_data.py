"""Stage `human_data`: the benchmark's own human-written training solutions.

For the optional `sft_human` row (GSM8K, MATH): the reference solutions of the
first problems of the training split, in the same record layout as the
teacher pool, so `sft` trains on a prefix of n of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config
from orchestrator.contract import Files, StageResult
from orchestrator.records import write_rows
from orchestrator.stages.teacher import record
from orchestrator.tasks import TaskSource, make_task

VERSION = "1"
INPUTS = ()


@dataclass(frozen=True)
class HumanDataParams:
    task: TaskSource
    n_max: int

    @classmethod
    def from_config(cls, config: Config) -> HumanDataParams:
        return cls(config.task.source, config.pool_size)


@dataclass(frozen=True)
class HumanDataResult(StageResult):
    examples: int


def run(params: HumanDataParams, inputs: dict[str, Path], out: Path) -> HumanDataResult:
    task = make_task(params.task, n_train=params.n_max, n_test=0)
    problems = task.split("train")
    if len(problems) < params.n_max:
        raise RuntimeError(f"human_data: the training split has {len(problems)} problems, "
                           f"fewer than {params.n_max}")
    write_rows(out / Files.DATA, [record(p, task.prompt_template, p.solution) for p in problems])
    return HumanDataResult(len(problems))
