"""Stage `sample`: the SFT model's own solutions to its training problems.

For the first n problems of the teacher pool (the ones the SFT model at (n,
seed) was trained on), sample M solutions each and grade them. One sampling
run is shared by `rft_self`, `dpo_negative` and `dpo_per_step` (Setlur et al.
2024: positives and negatives both come from pi_sft on D_syn's problems).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config, GenerationConfig, ModelLoading, OpenAIConfig, SamplingConfig
from orchestrator.contract import KEY_NEUTRAL, Files, GridPoint, In, StageResult, response_cache_dir
from orchestrator.modeling import model_path
from orchestrator.records import read_rows, write_rows

VERSION = "1"
INPUTS = (In.MODEL, In.DATA)


@dataclass(frozen=True)
class SampleParams:
    sampling: SamplingConfig
    generation: GenerationConfig
    model: ModelLoading
    task_name: str       # grading conventions (\\boxed first for math)
    n: int
    seed: int
    # generation.backend openai only (added later: at its default every key is what it was)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={KEY_NEUTRAL: True})

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> SampleParams:
        return cls(config.sampling, config.generation, config.model.loading, config.task.name, point.n,
                   point.seed, config.generation_api)


@dataclass(frozen=True)
class SampleResult(StageResult):
    problems: int
    samples: int
    correct_fraction: float
    problems_with_correct: int
    problems_with_incorrect: int


def run(params: SampleParams, inputs: dict[str, Path], out: Path) -> SampleResult:
    from orchestrator.backends import (
        GenerationRequest,
        GradingRule,
        generate_and_grade,
        open_backend,
    )

    problems = read_rows(inputs[In.DATA] / Files.DATA, limit=params.n)
    sampling = params.sampling
    request = GenerationRequest(n=sampling.samples_per_problem, temperature=sampling.temperature,
                                top_p=sampling.top_p, max_new_tokens=params.generation.max_new_tokens,
                                stop=params.generation.stop, seed=params.seed)
    with open_backend(params.generation, model_path(inputs[In.MODEL]), params.model,
                      params.openai, response_cache_dir(out)) as backend:
        graded = generate_and_grade(backend, [p["prompt"] for p in problems],
                                    [p["answer"] for p in problems], request,
                                    GradingRule(params.task_name))
    rows = [{"problem_id": p["problem_id"], "prompt": p["prompt"], "answer": p["answer"],
             "sample_index": j, "completion": g.text, "extracted": g.grade.extracted,
             "correct": g.correct, "num_tokens": g.completion.num_tokens}
            for p, samples in zip(problems, graded, strict=True) for j, g in enumerate(samples)]
    write_rows(out / Files.SAMPLES, rows)
    correct_ids = {r["problem_id"] for r in rows if r["correct"]}
    incorrect_ids = {r["problem_id"] for r in rows if not r["correct"]}
    return SampleResult(len(problems), len(rows), len([r for r in rows if r["correct"]]) / len(rows),
                        len(correct_ids), len(incorrect_ids),
                        generated_tokens=sum(r["num_tokens"] for r in rows))
