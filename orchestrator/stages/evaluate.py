"""Stage `evaluate`: test error of a trained model on the held-out test split.

Greedy decoding gives pass@1 and test_error = 1 - pass@1. With `eval.pass_k`
set, `eval.pass_k_samples` sampled completions per problem give pass@k by the
unbiased estimator of Chen et al. (2021). Per-problem results go to
`predictions.jsonl` so the analysis can bootstrap over test problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.backends import GenerationRequest, Graded, GradingRule
from orchestrator.config import Config, EvalConfig, GenerationConfig, ModelLoading, OpenAIConfig
from orchestrator.contract import KEY_NEUTRAL, Files, In, StageResult, response_cache_dir
from orchestrator.modeling import model_path
from orchestrator.records import write_rows
from orchestrator.tasks import Problem, TaskSource, format_prompt, make_task

VERSION = "2"  # 2: arith grading accepts only "#### N"
INPUTS = (In.MODEL,)
SAMPLING_SEED = 1234     # fixed: the same model always gets the same pass@k


@dataclass(frozen=True)
class EvalParams:
    task: TaskSource
    n_test: int
    eval: EvalConfig
    generation: GenerationConfig
    model: ModelLoading
    # generation.backend openai only (added later: at its default every key is what it was)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={KEY_NEUTRAL: True})

    @classmethod
    def from_config(cls, config: Config) -> EvalParams:
        return cls(config.task.source.without_teacher_style(), config.task.n_test, config.eval,
                   config.generation, config.model.loading, config.generation_api)


@dataclass(frozen=True)
class EvalResult(StageResult):
    test_error: float
    pass_at_1: float
    pass_at_k: float          # nan when eval.pass_k is 0
    k: int
    n_test: int
    grading_timeouts: int


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def run(params: EvalParams, inputs: dict[str, Path], out: Path) -> EvalResult:
    from orchestrator.backends import open_backend

    problems = make_task(params.task, n_train=0, n_test=params.n_test).split("test")
    with open_backend(params.generation, model_path(inputs[In.MODEL]), params.model,
                      params.openai, response_cache_dir(out)) as backend:
        greedy = [g[0] for g in _generate(backend, problems, params, GenerationRequest(
            max_new_tokens=params.generation.max_new_tokens, stop=params.generation.stop))]
        sampled = _sampled(backend, problems, params) if params.eval.pass_k else None
    rows = [{"problem_id": p.id, "completion": g.text, "extracted": g.grade.extracted,
             "answer": p.answer, "correct": g.correct, "num_tokens": g.completion.num_tokens}
            for p, g in zip(problems, greedy, strict=True)]
    tokens = sum(g.completion.num_tokens for g in greedy)
    timeouts = sum(g.grade.timed_out for g in greedy)
    k, pass_k = params.eval.pass_k, float("nan")
    if sampled is not None:
        scores = []
        for row, samples in zip(rows, sampled, strict=True):
            row["samples_correct"] = sum(g.correct for g in samples)
            scores.append(pass_at_k(len(samples), row["samples_correct"], k))
        pass_k = sum(scores) / len(scores)
        tokens += sum(g.completion.num_tokens for samples in sampled for g in samples)
        timeouts += sum(g.grade.timed_out for samples in sampled for g in samples)
    write_rows(out / Files.PREDICTIONS, rows)
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    return EvalResult(1.0 - accuracy, accuracy, pass_k, k, len(rows), timeouts,
                      generated_tokens=tokens)


def _sampled(backend, problems: list[Problem], params: EvalParams) -> list[list[Graded]]:
    """`eval.pass_k_samples` (or k) sampled completions per problem, for pass@k."""
    return _generate(backend, problems, params, GenerationRequest(
        n=params.eval.pass_k_samples or params.eval.pass_k, temperature=params.eval.temperature,
        max_new_tokens=params.generation.max_new_tokens, stop=params.generation.stop,
        seed=SAMPLING_SEED))


def _generate(backend, problems: list[Problem], params: EvalParams,
              request: GenerationRequest) -> list[list[Graded]]:
    from orchestrator.backends import generate_and_grade

    template = params.task.prompt_template
    return generate_and_grade(backend, [format_prompt(template, p.question) for p in problems],
                              [p.answer for p in problems], request,
                              GradingRule(params.task.name, params.eval.grade_timeout_s))
