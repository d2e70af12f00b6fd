"""Stage `evaluate`: test error of a trained model on the held-out test split.

Greedy decoding gives pass@1 and test_error = 1 - pass@1. With `eval.pass_k`
set, `eval.pass_k_samples` sampled completions per problem give pass@k by the
unbiased estimator of Chen et al. (2021). Per-problem results go to
`predictions.jsonl` so the analysis can bootstrap over test problems.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import EvalConfig, GenerationConfig, ModelConfig, TaskConfig
from orchestrator.modeling import model_path
from orchestrator.records import write_rows
from orchestrator.tasks import format_prompt, make_task

VERSION = "2"  # 2: arith grading accepts only "#### N"
SAMPLING_SEED = 1234     # fixed: the same model always gets the same pass@k


@dataclass(frozen=True)
class EvalParams:
    task: TaskConfig
    eval: EvalConfig
    generation: GenerationConfig
    model: ModelConfig


@dataclass(frozen=True)
class EvalResult:
    test_error: float
    pass_at_1: float
    pass_at_k: float          # nan when eval.pass_k is 0
    k: int
    n_test: int
    generated_tokens: int
    grading_timeouts: int


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k: 1 - C(n - c, k) / C(n, k)."""
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


def run(params: EvalParams, inputs: dict[str, Path], out: Path) -> EvalResult:
    from orchestrator.backends import make_backend
    from orchestrator.tasks.grading import grade_batch

    task = make_task(params.task)
    problems = task.split("test")[:params.task.n_test]
    prompts = [format_prompt(task.prompt_template, p.question) for p in problems]
    backend = make_backend(params.generation, model_path(inputs["model"]), params.model)
    gen = params.generation
    greedy = [c[0] for c in backend.generate(prompts, n=1, temperature=0.0,
                                              max_new_tokens=gen.max_new_tokens, stop=gen.stop)]
    grades = grade_batch([c.text for c in greedy], [p.answer for p in problems],
                         timeout_s=params.eval.grade_timeout_s, task=params.task.name)
    rows = [{"problem_id": p.id, "completion": c.text, "extracted": g.extracted, "answer": p.answer,
             "correct": g.correct, "num_tokens": c.num_tokens}
            for p, c, g in zip(problems, greedy, grades, strict=True)]
    tokens = sum(c.num_tokens for c in greedy)
    timeouts = sum(g.timed_out for g in grades)
    k, pass_k = params.eval.pass_k, float("nan")
    if k:
        pass_k, extra_tokens, extra_timeouts = _sampled_pass_k(backend, prompts, problems, params, rows)
        tokens += extra_tokens
        timeouts += extra_timeouts
    write_rows(out / "predictions.jsonl", rows)
    accuracy = sum(r["correct"] for r in rows) / len(rows)
    return EvalResult(1.0 - accuracy, accuracy, pass_k, k, len(rows), tokens, timeouts)


def _sampled_pass_k(backend, prompts, problems, params: EvalParams, rows: list[dict]):
    from orchestrator.tasks.grading import grade_batch

    k = params.eval.pass_k
    samples = params.eval.pass_k_samples or k
    outputs = backend.generate(prompts, n=samples, temperature=params.eval.temperature,
                               max_new_tokens=params.generation.max_new_tokens,
                               stop=params.generation.stop, seed=SAMPLING_SEED)
    flat = [c for per_problem in outputs for c in per_problem]
    grades = grade_batch([c.text for c in flat], [p.answer for p in problems for _ in range(samples)],
                         timeout_s=params.eval.grade_timeout_s, task=params.task.name)
    scores = []
    for i, row in enumerate(rows):
        correct = sum(g.correct for g in grades[i * samples:(i + 1) * samples])
        row["samples_correct"] = correct
        scores.append(pass_at_k(samples, correct, k))
    return (sum(scores) / len(scores), sum(c.num_tokens for c in flat),
            sum(g.timed_out for g in grades))
