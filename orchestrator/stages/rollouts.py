"""Stage `rollouts`: Monte Carlo values of every step prefix of the negatives.

For up to `per_step.negatives_per_problem` distinct incorrect samples per
problem, each prefix (the problem plus the first i steps, i = 1 .. L-1) is
continued K times by the SFT policy and graded; V_i is the success fraction and
A_i = V_i - V_{i-1} (Setlur et al. 2024 §4; Math-Shepherd's soft estimate).
V_0, the success rate from the bare problem, is the fraction of the problem's
M self-samples that are correct when they were drawn at the rollout
temperature (they are rollouts from the empty prefix); otherwise the bare
problem is rolled out K times like any other prefix.

Rollouts are the cost driver, so all prefixes of all problems go to the
backend in one batched call, and a prefix shared by several negatives (the
bare problem, common first steps) is rolled out once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import GenerationConfig, ModelConfig, PerStepConfig, SamplingConfig
from orchestrator.credit import prefix_prompts, step_advantages, step_values
from orchestrator.modeling import model_path
from orchestrator.records import read_rows, write_rows
from orchestrator.tasks.base import split_steps

VERSION = "2"  # 2: V_0 from the self-samples


@dataclass(frozen=True)
class RolloutParams:
    rollouts: int
    temperature: float
    negatives_per_problem: int
    generation: GenerationConfig
    model: ModelConfig
    task_name: str
    seed: int
    v0_from_samples: bool = True    # the M self-samples, drawn at this temperature, give V_0

    @classmethod
    def from_config(cls, per_step: PerStepConfig, sampling: SamplingConfig,
                    generation: GenerationConfig, model: ModelConfig, task_name: str,
                    seed: int) -> RolloutParams:
        # The pit rule and pair cap are not here: changing them must not redo rollouts.
        return cls(per_step.rollouts, per_step.temperature, per_step.negatives_per_problem,
                   generation, model, task_name, seed,
                   # rollouts sample with top_p 1: the samples match only if they did too
                   v0_from_samples=(sampling.temperature == per_step.temperature
                                    and sampling.top_p == 1.0))


@dataclass(frozen=True)
class RolloutResult:
    negatives: int
    prefixes: int
    unique_prefixes: int
    rollouts: int
    mean_value: float
    generated_tokens: int


def select_negatives(samples: list[dict], per_problem: int) -> list[dict]:
    """Distinct incorrect samples with at least one step, capped per problem."""
    chosen, seen = [], set()
    counts: dict[str, int] = {}
    for s in samples:
        key = (s["problem_id"], s["completion"])
        if s["correct"] or key in seen or not split_steps(s["completion"]):
            continue
        if counts.get(s["problem_id"], 0) >= per_problem:
            continue
        seen.add(key)
        counts[s["problem_id"]] = counts.get(s["problem_id"], 0) + 1
        chosen.append(s)
    return chosen


def run(params: RolloutParams, inputs: dict[str, Path], out: Path) -> RolloutResult:
    from orchestrator.backends import make_backend
    from orchestrator.tasks.grading import grade_batch

    samples = read_rows(inputs["samples"] / "samples.jsonl")
    negatives = select_negatives(samples, params.negatives_per_problem)
    plans = [(s, split_steps(s["completion"])) for s in negatives]
    first = 1 if params.v0_from_samples else 0
    prompts = {(s["answer"], p) for s, steps in plans
               for p in prefix_prompts(s["prompt"], steps)[first:]}
    unique = sorted(prompts)
    backend = make_backend(params.generation, model_path(inputs["model"]), params.model)
    outputs = backend.generate([p for _, p in unique], n=params.rollouts,
                               temperature=params.temperature,
                               max_new_tokens=params.generation.max_new_tokens,
                               stop=params.generation.stop, seed=params.seed)
    flat = [(answer, c) for (answer, _), per_prompt in zip(unique, outputs, strict=True)
            for c in per_prompt]
    grades = grade_batch([c.text for _, c in flat], [a for a, _ in flat], task=params.task_name)
    k = params.rollouts
    by_prompt = {key: ([c.text for c in outputs[i]], [g.correct for g in grades[i * k:(i + 1) * k]])
                 for i, key in enumerate(unique)}
    if params.v0_from_samples:
        # V_0 is the success rate from the bare problem: exactly what the M
        # self-samples measure when drawn at the rollout temperature.
        for s in samples:
            texts, outcomes = by_prompt.setdefault((s["answer"], s["prompt"]), ([], []))
            texts.append(s["completion"])
            outcomes.append(bool(s["correct"]))
    rows = [_row(s, steps, by_prompt) for s, steps in plans]
    write_rows(out / "rollouts.jsonl", rows)
    values = [v for r in rows for v in r["values"][:-1]]
    return RolloutResult(len(rows), sum(len(steps) - first for _, steps in plans), len(unique),
                         len(flat), sum(values) / len(values) if values else float("nan"),
                         sum(c.num_tokens for _, c in flat))


def _row(sample: dict, steps: list[str], by_prompt: dict) -> dict:
    per_prefix = [by_prompt[(sample["answer"], p)] for p in prefix_prompts(sample["prompt"], steps)]
    successes = [outcomes for _, outcomes in per_prefix]
    values = step_values(successes, final_correct=False)
    return {
        "problem_id": sample["problem_id"], "sample_index": sample["sample_index"],
        "prompt": sample["prompt"], "answer": sample["answer"], "steps": steps,
        "values": values, "advantages": step_advantages(values), "successes": successes,
        "continuations": [texts for texts, _ in per_prefix],
    }
