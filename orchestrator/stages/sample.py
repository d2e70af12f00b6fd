"""Stage `sample`: the SFT model's own solutions to its training problems.

For the first n problems of the teacher pool (the ones the SFT model at (n,
seed) was trained on), sample M solutions each and grade them. One sampling
run is shared by `rft_self`, `dpo_negative` and `dpo_per_step` (Setlur et al.
2024: positives and negatives both come from pi_sft on D_syn's problems).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import GenerationConfig, ModelConfig, SamplingConfig
from orchestrator.modeling import model_path
from orchestrator.records import read_rows, write_rows

VERSION = "1"


@dataclass(frozen=True)
class SampleParams:
    sampling: SamplingConfig
    generation: GenerationConfig
    model: ModelConfig
    task_name: str       # grading conventions (\\boxed first for math)
    n: int
    seed: int


@dataclass(frozen=True)
class SampleResult:
    problems: int
    samples: int
    correct_fraction: float
    problems_with_correct: int
    problems_with_incorrect: int
    generated_tokens: int


def run(params: SampleParams, inputs: dict[str, Path], out: Path) -> SampleResult:
    from orchestrator.backends import make_backend
    from orchestrator.tasks.grading import grade_batch

    problems = read_rows(inputs["data"] / "data.jsonl", limit=params.n)
    m = params.sampling.samples_per_problem
    backend = make_backend(params.generation, model_path(inputs["model"]), params.model)
    outputs = backend.generate([p["prompt"] for p in problems], n=m,
                               temperature=params.sampling.temperature, top_p=params.sampling.top_p,
                               max_new_tokens=params.generation.max_new_tokens,
                               stop=params.generation.stop, seed=params.seed)
    flat = [(p, j, c) for p, per_problem in zip(problems, outputs, strict=True)
            for j, c in enumerate(per_problem)]
    grades = grade_batch([c.text for _, _, c in flat], [p["answer"] for p, _, _ in flat],
                         task=params.task_name)
    rows = [{"problem_id": p["problem_id"], "prompt": p["prompt"], "answer": p["answer"],
             "sample_index": j, "completion": c.text, "extracted": g.extracted,
             "correct": g.correct, "num_tokens": c.num_tokens}
            for (p, j, c), g in zip(flat, grades, strict=True)]
    write_rows(out / "samples.jsonl", rows)
    correct_ids = {r["problem_id"] for r in rows if r["correct"]}
    incorrect_ids = {r["problem_id"] for r in rows if not r["correct"]}
    return SampleResult(len(problems), len(rows), len([r for r in rows if r["correct"]]) / len(rows),
                        len(correct_ids), len(incorrect_ids), sum(r["num_tokens"] for r in rows))
