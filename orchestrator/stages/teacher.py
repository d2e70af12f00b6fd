"""Stage `teacher_generate`: the synthetic pool D_syn, written once at n_max.

Every size n of the grid trains on the first n records of this one pool, so
sizes nest (D_syn[:n] is a prefix of D_syn[:2n]) and adding a size never
changes a smaller one. Records keep only answer-verified solutions.

- `oracle`: the task's exact solver (arith): every reference solution is correct.
- `model`: a teacher model through the generation backend samples up to
  `teacher.samples_per_problem` solutions per problem; the first correct one is
  kept. Problems are taken in fixed-size chunks with a per-chunk seed, so the
  pool's prefix does not depend on n_max.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, GenerationConfig, ModelLoading, TeacherConfig
from orchestrator.records import write_rows
from orchestrator.contract import Files, StageResult
from orchestrator.tasks import Problem, Task, TaskSource, format_prompt, make_task

VERSION = "1"
INPUTS = ()
CHUNK = 512


@dataclass(frozen=True)
class OracleTeacherParams:
    """The task's exact solver: no teacher knob changes what it writes."""

    task: TaskSource
    n_max: int


@dataclass(frozen=True)
class ModelTeacherParams:
    task: TaskSource
    n_train: int                # training problems the teacher may try
    teacher: TeacherConfig
    n_max: int
    generation: GenerationConfig
    model: ModelLoading         # how the teacher model is loaded


TeacherParams = OracleTeacherParams | ModelTeacherParams


def from_config(config: Config) -> TeacherParams:
    if config.teacher.kind == "oracle":
        return OracleTeacherParams(config.task.source, config.pool_size)
    return ModelTeacherParams(config.task.source, config.task.n_train, config.teacher,
                              config.pool_size, config.generation, config.model.loading)


@dataclass(frozen=True)
class TeacherResult(StageResult):
    kind: str
    pool_size: int
    problems_tried: int
    teacher_accuracy: float     # fraction of tried problems with a kept solution


def record(problem: Problem, template: str, completion: str) -> dict:
    return {"problem_id": problem.id, "question": problem.question, "answer": problem.answer,
            "prompt": format_prompt(template, problem.question), "completion": completion}


def run(params: TeacherParams, inputs: dict[str, Path], out: Path) -> TeacherResult:
    if isinstance(params, OracleTeacherParams):
        task = make_task(params.task, n_train=params.n_max, n_test=0)
        rows = [record(p, task.prompt_template, p.solution) for p in task.split("train")]
        tried, tokens, kind = len(rows), 0, "oracle"
    else:
        task = make_task(params.task, n_train=params.n_train, n_test=0)
        rows, tried, tokens = _model_teacher(params, task)
        kind = "model"
    if len(rows) < params.n_max:
        raise RuntimeError(
            f"teacher_generate: the teacher solved only {len(rows)} of {tried} training problems, "
            f"fewer than the largest grid size {params.n_max}; raise task.n_train, "
            "teacher.samples_per_problem, or lower grid.sizes")
    write_rows(out / Files.DATA, rows)
    return TeacherResult(kind, len(rows), tried, len(rows) / max(tried, 1),
                         generated_tokens=tokens)


def _model_teacher(params: ModelTeacherParams, task: Task) -> tuple[list[dict], int, int]:
    from orchestrator.backends import (
        GenerationRequest,
        GradingRule,
        generate_and_grade,
        open_backend,
    )

    teacher = params.teacher
    problems = task.split("train")
    rows, tried, tokens = [], 0, 0
    with open_backend(params.generation, teacher.model, params.model) as backend:
        for chunk_start in range(0, len(problems), CHUNK):
            chunk = problems[chunk_start:chunk_start + CHUNK]
            request = GenerationRequest(n=teacher.samples_per_problem,
                                        temperature=teacher.temperature,
                                        max_new_tokens=teacher.max_new_tokens,
                                        stop=params.generation.stop, seed=chunk_start)
            graded = generate_and_grade(backend,
                                        [format_prompt(task.prompt_template, p.question)
                                         for p in chunk],
                                        [p.answer for p in chunk], request,
                                        GradingRule(params.task.name))
            tokens += sum(g.completion.num_tokens for attempts in graded for g in attempts)
            for problem, attempts in zip(chunk, graded, strict=True):
                tried += 1
                kept = next((g.text for g in attempts if g.correct), None)
                if kept is not None:
                    rows.append(record(problem, task.prompt_template, kept))
                if len(rows) == params.n_max:
                    return rows, tried, tokens
    return rows, tried, tokens
