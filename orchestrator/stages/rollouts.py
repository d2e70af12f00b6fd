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

from orchestrator.config import Config, GenerationConfig, ModelLoading
from orchestrator.contract import Files, GridPoint, In, StageResult
from orchestrator.credit import prefix_prompts, step_advantages, step_values
from orchestrator.modeling import model_path
from orchestrator.records import read_rows, write_rows
from orchestrator.tasks.base import split_steps

VERSION = "2"  # 2: V_0 from the self-samples
INPUTS = (In.MODEL, In.SAMPLES)


@dataclass(frozen=True)
class RolloutParams:
    rollouts: int
    temperature: float
    negatives_per_problem: int
    generation: GenerationConfig
    model: ModelLoading
    task_name: str
    seed: int
    v0_from_samples: bool = True    # the M self-samples, drawn at this temperature, give V_0

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> RolloutParams:
        # The pit rule and pair cap are not here: changing them must not redo rollouts.
        per_step, sampling = config.per_step, config.sampling
        return cls(per_step.rollouts, per_step.temperature, per_step.negatives_per_problem,
                   config.generation, config.model.loading, config.task.name, point.seed,
                   # rollouts sample with top_p 1: the samples match only if they did too
                   v0_from_samples=(sampling.temperature == per_step.temperature
                                    and sampling.top_p == 1.0))


@dataclass(frozen=True)
class RolloutResult(StageResult):
    negatives: int
    prefixes: int
    unique_prefixes: int
    rollouts: int
    mean_value: float


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
    from orchestrator.backends import (
        GenerationRequest,
        GradingRule,
        generate_and_grade,
        open_backend,
    )

    samples = read_rows(inputs[In.SAMPLES] / Files.SAMPLES)
    negatives = select_negatives(samples, params.negatives_per_problem)
    plans = [(s, split_steps(s["completion"])) for s in negatives]
    first = 1 if params.v0_from_samples else 0
    prompts = {(s["answer"], p) for s, steps in plans
               for p in prefix_prompts(s["prompt"], steps)[first:]}
    unique = sorted(prompts)
    request = GenerationRequest(n=params.rollouts, temperature=params.temperature,
                                max_new_tokens=params.generation.max_new_tokens,
                                stop=params.generation.stop, seed=params.seed)
    with open_backend(params.generation, model_path(inputs[In.MODEL]), params.model) as backend:
        graded = generate_and_grade(backend, [p for _, p in unique], [a for a, _ in unique],
                                    request, GradingRule(params.task_name))
    by_prompt = {key: ([g.text for g in runs], [g.correct for g in runs])
                 for key, runs in zip(unique, graded, strict=True)}
    if params.v0_from_samples:
        # V_0 is the success rate from the bare problem: exactly what the M
        # self-samples measure when drawn at the rollout temperature.
        for s in samples:
            texts, outcomes = by_prompt.setdefault((s["answer"], s["prompt"]), ([], []))
            texts.append(s["completion"])
            outcomes.append(bool(s["correct"]))
    rows = [_row(s, steps, by_prompt) for s, steps in plans]
    write_rows(out / Files.ROLLOUTS, rows)
    values = [v for r in rows for v in r["values"][:-1]]
    flat = [g for runs in graded for g in runs]
    return RolloutResult(len(rows), sum(len(steps) - first for _, steps in plans), len(unique),
                         len(flat), sum(values) / len(values) if values else float("nan"),
                         generated_tokens=sum(g.completion.num_tokens for g in flat))


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
