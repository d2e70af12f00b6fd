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

from orchestrator.config import GenerationConfig, ModelConfig, TaskConfig, TeacherConfig
from orchestrator.records import write_rows
from orchestrator.tasks import Problem, format_prompt, make_task

VERSION = "1"
CHUNK = 512


@dataclass(frozen=True)
class TeacherParams:
    task: TaskConfig
    teacher: TeacherConfig
    n_max: int
    # Only a model teacher reads these; the planner leaves them None for the
    # oracle so that they do not enter its cache key.
    generation: GenerationConfig | None = None
    model: ModelConfig | None = None    # dtype and trust_remote_code of the teacher model


@dataclass(frozen=True)
class TeacherResult:
    kind: str
    pool_size: int
    problems_tried: int
    teacher_accuracy: float     # fraction of tried problems with a kept solution
    generated_tokens: int


def record(problem: Problem, template: str, completion: str) -> dict:
    return {"problem_id": problem.id, "question": problem.question, "answer": problem.answer,
            "prompt": format_prompt(template, problem.question), "completion": completion}


def run(params: TeacherParams, inputs: dict[str, Path], out: Path) -> TeacherResult:
    task = make_task(params.task)
    problems = task.split("train")
    if params.teacher.kind == "oracle":
        rows = [record(p, task.prompt_template, p.solution) for p in problems[:params.n_max]]
        tried, tokens = len(rows), 0
    else:
        rows, tried, tokens = _model_teacher(params, task, problems)
    if len(rows) < params.n_max:
        raise RuntimeError(
            f"teacher_generate: the teacher solved only {len(rows)} of {tried} training problems, "
            f"fewer than the largest grid size {params.n_max}; raise task.n_train, "
            "teacher.samples_per_problem, or lower grid.sizes")
    write_rows(out / "data.jsonl", rows)
    return TeacherResult(params.teacher.kind, len(rows), tried, len(rows) / max(tried, 1), tokens)


def _model_teacher(params: TeacherParams, task, problems: list[Problem]):
    from orchestrator.backends import make_backend
    from orchestrator.tasks.grading import grade_batch

    teacher = params.teacher
    backend = make_backend(params.generation, teacher.model, params.model)
    rows, tried, tokens = [], 0, 0
    for chunk_start in range(0, len(problems), CHUNK):
        chunk = problems[chunk_start:chunk_start + CHUNK]
        prompts = [format_prompt(task.prompt_template, p.question) for p in chunk]
        samples = backend.generate(prompts, n=teacher.samples_per_problem,
                                   temperature=teacher.temperature,
                                   max_new_tokens=teacher.max_new_tokens,
                                   stop=params.generation.stop, seed=chunk_start)
        flat = [c for per_problem in samples for c in per_problem]
        grades = grade_batch([c.text for c in flat],
                             [p.answer for p in chunk for _ in range(teacher.samples_per_problem)],
                             task=params.task.name)
        tokens += sum(c.num_tokens for c in flat)
        for i, problem in enumerate(chunk):
            tried += 1
            m = teacher.samples_per_problem
            kept = next((flat[i * m + j].text for j in range(m) if grades[i * m + j].correct), None)
            if kept is not None:
                rows.append(record(problem, task.prompt_template, kept))
            if len(rows) == params.n_max:
                return rows, tried, tokens
    return rows, tried, tokens
