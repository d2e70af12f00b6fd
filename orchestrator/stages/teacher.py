"""Stage `teacher_generate`: the synthetic pool D_syn, written once at n_max.

Every size n of the grid trains on the first n records of this one pool, so
sizes nest (D_syn[:n] is a prefix of D_syn[:2n]) and adding a size never
changes a smaller one. Records keep only answer-verified solutions.

- `oracle`: the task's exact solver (arith): every reference solution is correct.
- `model`: a teacher model through the generation backend samples up to
  `teacher.samples_per_problem` solutions per problem; the first correct one is
  kept. Problems are taken in fixed-size chunks with a per-chunk seed, so the
  pool's prefix does not depend on n_max. The first chunk is a pilot: when its
  verified fraction is below `teacher.pilot_min_accuracy`, or too low to fill
  the pool from the problems there are, the stage stops before paying for the
  rest. An instruction-tuned teacher gets its chat template around each prompt
  (`teacher.chat_template`); the pool records keep the student's plain prompt.
- `openai`: the same, with the teacher behind an OpenAI-compatible server
  (section `openai`). Each response is cached in the store's `_responses/`
  folder (not in this attempt's folder), so a killed stage run again pays only
  for what is missing, and a recomputed one (another grid size) for nothing
  already asked. The key is no part of the params: the stage's cache key has
  the server, model, endpoint and sampling, never the API key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, GenerationConfig, ModelLoading, OpenAIConfig, TeacherConfig
from orchestrator.contract import Files, StageResult, response_cache_dir
from orchestrator.records import write_rows
from orchestrator.tasks import Problem, Task, TaskSource, format_prompt, make_task

VERSION = "2"  # 2: chunks of 200 (the first is the pilot); chat template for hub teachers
INPUTS = ()
CHUNK = 200     # problems per generate call; the first chunk is the pilot


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


@dataclass(frozen=True)
class OpenAITeacherParams:
    """A teacher behind an OpenAI-compatible server: no local loading or batching knob."""

    task: TaskSource
    n_train: int
    teacher: TeacherConfig
    n_max: int
    openai: OpenAIConfig        # server, endpoint, the key's variable name (never the key)
    stop: tuple[str, ...]       # generation.stop


TeacherParams = OracleTeacherParams | ModelTeacherParams | OpenAITeacherParams


def from_config(config: Config) -> TeacherParams:
    if config.teacher.kind == "oracle":
        return OracleTeacherParams(config.task.source, config.pool_size)
    if config.teacher.kind == "openai":
        return OpenAITeacherParams(config.task.source, config.task.n_train, config.teacher,
                                   config.pool_size, config.openai, config.generation.stop)
    return ModelTeacherParams(config.task.source, config.task.n_train, config.teacher,
                              config.pool_size, config.generation, config.model.loading)


@dataclass(frozen=True)
class TeacherResult(StageResult):
    kind: str
    pool_size: int
    problems_tried: int
    teacher_accuracy: float     # fraction of tried problems with a kept solution
    pilot_accuracy: float = float("nan")   # the same over the first chunk (model teachers)
    requests: int = 0           # openai: requests the server answered in this attempt
    cached_responses: int = 0   # openai: responses taken from the store's response cache


def record(problem: Problem, template: str, completion: str) -> dict:
    return {"problem_id": problem.id, "question": problem.question, "answer": problem.answer,
            "prompt": format_prompt(template, problem.question), "completion": completion}


def run(params: TeacherParams, inputs: dict[str, Path], out: Path) -> TeacherResult:
    if isinstance(params, OracleTeacherParams):
        task = make_task(params.task, n_train=params.n_max, n_test=0)
        rows = [record(p, task.prompt_template, p.solution) for p in task.split("train")]
        tried, tokens, kind, pilot = len(rows), 0, "oracle", float("nan")
        calls = {}
    else:
        task = make_task(params.task, n_train=params.n_train, n_test=0)
        with _open_teacher(params, out) as backend:
            rows, tried, tokens, pilot = _model_teacher(params, task, backend)
        kind = "openai" if isinstance(params, OpenAITeacherParams) else "model"
        calls = _api_counts(backend)
    if len(rows) < params.n_max:
        raise RuntimeError(
            f"teacher_generate: the teacher solved only {len(rows)} of {tried} training problems, "
            f"fewer than the largest grid size {params.n_max}; raise task.n_train, "
            "teacher.samples_per_problem, or lower grid.sizes")
    write_rows(out / Files.DATA, rows)
    return TeacherResult(kind, len(rows), tried, len(rows) / max(tried, 1), pilot,
                         generated_tokens=tokens, **calls)


def _open_teacher(params: ModelTeacherParams | OpenAITeacherParams, out: Path):
    from orchestrator.backends import open_backend, open_openai_backend

    if isinstance(params, OpenAITeacherParams):
        return open_openai_backend(params.openai, params.teacher.model, response_cache_dir(out))
    return open_backend(params.generation, params.teacher.model, params.model)


def _api_counts(backend) -> dict[str, int]:
    cache = getattr(backend, "cache", None)
    if cache is None:
        return {}
    return {"requests": backend.requests, "cached_responses": cache.hits}


def _model_teacher(params: ModelTeacherParams | OpenAITeacherParams, task: Task,
                   backend) -> tuple[list[dict], int, int, float]:
    """(pool rows, problems tried, generated tokens, the pilot's verified fraction)."""
    from orchestrator.backends import GenerationRequest, GradingRule, generate_and_grade

    teacher = params.teacher
    problems = task.split("train")
    as_prompt = _prompt_format(params, task)
    stop = params.stop if isinstance(params, OpenAITeacherParams) else params.generation.stop
    rows, tried, tokens, pilot = [], 0, 0, float("nan")
    for chunk_start in range(0, len(problems), CHUNK):
        chunk = problems[chunk_start:chunk_start + CHUNK]
        request = GenerationRequest(n=teacher.samples_per_problem, temperature=teacher.temperature,
                                    max_new_tokens=teacher.max_new_tokens, stop=stop,
                                    seed=chunk_start)
        graded = generate_and_grade(backend, [as_prompt(p) for p in chunk],
                                    [p.answer for p in chunk], request,
                                    GradingRule(params.task.name))
        tokens += sum(g.completion.num_tokens for attempts in graded for g in attempts)
        for problem, attempts in zip(chunk, graded, strict=True):
            tried += 1
            kept = next((g.text for g in attempts if g.correct), None)
            if kept is not None:
                rows.append(record(problem, task.prompt_template, kept))
            if len(rows) == params.n_max:
                return rows, tried, tokens, len(rows) / tried if chunk_start == 0 else pilot
        if chunk_start == 0:
            pilot = len(rows) / len(chunk)
            check_pilot(pilot, len(chunk), len(problems), params)
    return rows, tried, tokens, pilot


def check_pilot(accuracy: float, pilot_size: int, available: int,
                params: ModelTeacherParams | OpenAITeacherParams) -> None:
    """Stop after the pilot chunk when the full pool cannot be, or should not be, paid for."""
    expected = accuracy * available
    where = f"teacher pilot: {accuracy:.1%} of the first {pilot_size} problems verified"
    if accuracy < params.teacher.pilot_min_accuracy:
        raise RuntimeError(f"{where}, below teacher.pilot_min_accuracy "
                           f"{params.teacher.pilot_min_accuracy:.1%}; check the teacher, its "
                           "prompt format (teacher.chat_template) and max_new_tokens")
    if expected < params.n_max:
        raise RuntimeError(f"{where}; at that rate {available} training problems give about "
                           f"{expected:.0f} solutions, fewer than the pool of {params.n_max}: "
                           "raise task.n_train or teacher.samples_per_problem, or lower grid.sizes")


def _prompt_format(params: ModelTeacherParams | OpenAITeacherParams, task: Task):
    """How a problem becomes the teacher's input: the task's prompt, wrapped in the teacher
    tokenizer's chat template when it has one (teacher.chat_template). A server applies its
    own template (openai.endpoint: chat), so an openai teacher gets the plain prompt."""
    def plain(problem: Problem) -> str:
        return format_prompt(task.prompt_template, problem.question)

    mode = params.teacher.chat_template
    if mode == "off" or isinstance(params, OpenAITeacherParams):
        return plain
    from orchestrator.modeling import load_tokenizer

    tokenizer = load_tokenizer(params.teacher.model, params.model)
    if not getattr(tokenizer, "chat_template", None):
        if mode == "on":
            raise RuntimeError(f"teacher.chat_template is 'on' but {params.teacher.model}'s "
                               "tokenizer has no chat template")
        return plain

    def chat(problem: Problem) -> str:
        return tokenizer.apply_chat_template([{"role": "user", "content": plain(problem)}],
                                             tokenize=False, add_generation_prompt=True)

    return chat
