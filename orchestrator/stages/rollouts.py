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
bare problem, common first steps) is rolled out once. With
`per_step.early_stop` they go prefix depth by depth instead (one batched call
per depth), and a negative is not rolled out past its first zero-value prefix:
the `first_zero` pit needs nothing after it (spend the saving on K).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config, GenerationConfig, ModelLoading, OpenAIConfig
from orchestrator.contract import KEY_NEUTRAL, Files, GridPoint, In, StageResult, response_cache_dir
from orchestrator.credit import prefix_prompts, prefix_text, step_advantages, step_values
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
    # Stop a negative at its first zero-value prefix (added later: the default keeps keys)
    early_stop: bool = field(default=False, metadata={KEY_NEUTRAL: True})
    # generation.backend openai only (added later: at its default every key is what it was)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={KEY_NEUTRAL: True})

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> RolloutParams:
        # The pit rule and pair cap are not here: changing them must not redo rollouts.
        per_step, sampling = config.per_step, config.sampling
        return cls(per_step.rollouts, per_step.temperature, per_step.negatives_per_problem,
                   config.generation, config.model.loading, config.task.name, point.seed,
                   # rollouts sample with top_p 1: the samples match only if they did too
                   v0_from_samples=(sampling.temperature == per_step.temperature
                                    and sampling.top_p == 1.0),
                   early_stop=per_step.early_stop, openai=config.generation_api)


@dataclass(frozen=True)
class RolloutResult(StageResult):
    negatives: int
    prefixes: int
    unique_prefixes: int
    rollouts: int
    mean_value: float
    stopped_at_pit: int = 0       # per_step.early_stop: negatives not rolled out past their pit
    prefixes_skipped: int = 0     # and the prefixes that saved


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
    from orchestrator.backends import GenerationRequest, GradingRule, open_backend

    samples = read_rows(inputs[In.SAMPLES] / Files.SAMPLES)
    negatives = select_negatives(samples, params.negatives_per_problem)
    plans = [(s, split_steps(s["completion"])) for s in negatives]
    first = 1 if params.v0_from_samples else 0
    request = GenerationRequest(n=params.rollouts, temperature=params.temperature,
                                max_new_tokens=params.generation.max_new_tokens,
                                stop=params.generation.stop, seed=params.seed)
    with open_backend(params.generation, model_path(inputs[In.MODEL]), params.model,
                      params.openai, response_cache_dir(out)) as backend:
        rollouts = _Rollouts(backend, request, GradingRule(params.task_name))
        if params.early_stop:
            stopped = _until_the_pit(rollouts, plans, first)
        else:
            stopped = 0
            rollouts.add({(s["answer"], p) for s, steps in plans
                          for p in prefix_prompts(s["prompt"], steps)[first:]})
    by_prompt = rollouts.by_prompt
    if params.v0_from_samples:
        # V_0 is the success rate from the bare problem: exactly what the M
        # self-samples measure when drawn at the rollout temperature.
        for s in samples:
            texts, outcomes = by_prompt.setdefault((s["answer"], s["prompt"]), ([], []))
            texts.append(s["completion"])
            outcomes.append(bool(s["correct"]))
    rows = [_row(s, steps, by_prompt) for s, steps in plans]
    write_rows(out / Files.ROLLOUTS, rows)
    values = [v for r in rows for v in r["values"][:r["rolled_out"]]]   # not the final grade
    rolled = sum(r["rolled_out"] - first for r in rows)
    return RolloutResult(len(rows), rolled, rollouts.unique, len(rollouts.flat),
                         sum(values) / len(values) if values else float("nan"),
                         generated_tokens=sum(g.completion.num_tokens for g in rollouts.flat),
                         stopped_at_pit=stopped,
                         prefixes_skipped=sum(len(steps) - first for _, steps in plans) - rolled)


class _Rollouts:
    """The rollouts made so far: (answer, prefix prompt) -> (texts, outcomes); each prefix
    is rolled out once, however many negatives share it, in one batched call per `add`."""

    def __init__(self, backend, request, rule):
        self.backend, self.request, self.rule = backend, request, rule
        self.by_prompt: dict[tuple[str, str], tuple[list[str], list[bool]]] = {}
        self.flat: list = []
        self.unique = 0

    def add(self, keys: set[tuple[str, str]]) -> None:
        from orchestrator.backends import generate_and_grade

        todo = sorted(keys - self.by_prompt.keys())
        if not todo:
            return
        graded = generate_and_grade(self.backend, [p for _, p in todo], [a for a, _ in todo],
                                    self.request, self.rule)
        for key, runs in zip(todo, graded, strict=True):
            self.by_prompt[key] = ([g.text for g in runs], [g.correct for g in runs])
            self.flat.extend(runs)
        self.unique += len(todo)


def _until_the_pit(rollouts: _Rollouts, plans: list[tuple[dict, list[str]]], first: int) -> int:
    """Roll out prefix after prefix, all negatives' prefix i in one call, and stop a negative
    at its first prefix (after step >= 1) from which no rollout succeeds: that step is its
    first pit (`first_zero`), and nothing after it changes that. How many stopped there."""
    alive, stopped = plans, 0
    for depth in itertools.count(first):
        alive = [(s, steps) for s, steps in alive if depth < len(steps)]
        if not alive:
            return stopped
        keys = {(s["answer"], prefix_text(s["prompt"], steps, depth)): (s, steps)
                for s, steps in alive}
        rollouts.add(set(keys))
        if depth == 0:                  # the bare problem's value names no step
            continue
        hopeless = {key for key in keys if not any(rollouts.by_prompt[key][1])}
        still = [(s, steps) for s, steps in alive
                 if (s["answer"], prefix_text(s["prompt"], steps, depth)) not in hopeless]
        stopped, alive = stopped + len(alive) - len(still), still
    return stopped


def _row(sample: dict, steps: list[str], by_prompt: dict) -> dict:
    """A negative's rollouts: every prefix's, or (early stop) those up to its pit."""
    per_prefix = []
    for prompt in prefix_prompts(sample["prompt"], steps):
        found = by_prompt.get((sample["answer"], prompt))
        if found is None:               # stopped at the pit: nothing after it was rolled out
            break
        per_prefix.append(found)
    successes = [outcomes for _, outcomes in per_prefix]
    if len(per_prefix) == len(steps):
        values = step_values(successes, final_correct=False)
    else:                               # V_0 .. V_pit; V_pit = 0
        values = [sum(outcomes) / len(outcomes) for outcomes in successes]
    return {
        "problem_id": sample["problem_id"], "sample_index": sample["sample_index"],
        "prompt": sample["prompt"], "answer": sample["answer"], "steps": steps,
        "values": values, "advantages": step_advantages(values), "successes": successes,
        "continuations": [texts for texts, _ in per_prefix], "rolled_out": len(per_prefix),
    }
