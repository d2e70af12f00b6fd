"""Stage `human_data`: the benchmark's own human-written training solutions.

For the optional `sft_human` row (GSM8K, MATH): the reference solutions of the
first problems of the training split, in the same record layout as the
teacher pool, so `sft` trains on a prefix of n of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import TaskConfig
from orchestrator.records import write_rows
from orchestrator.stages.teacher import record
from orchestrator.tasks import make_task

VERSION = "1"


@dataclass(frozen=True)
class HumanDataParams:
    task: TaskConfig
    n_max: int


@dataclass(frozen=True)
class HumanDataResult:
    examples: int


def run(params: HumanDataParams, inputs: dict[str, Path], out: Path) -> HumanDataResult:
    task = make_task(params.task)
    problems = task.split("train")[:params.n_max]
    if len(problems) < params.n_max:
        raise RuntimeError(f"human_data: the training split has {len(problems)} problems, "
                           f"fewer than {params.n_max}")
    write_rows(out / "data.jsonl", [record(p, task.prompt_template, p.solution) for p in problems])
    return HumanDataResult(len(problems))
