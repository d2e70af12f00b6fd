"""Stage `step_pairs`: per-step preference pairs at each negative's first pit.

For every rolled-out negative, the pit rule (`per_step.pit_rule`) picks the
critical step c. The pair shares the problem and steps 1..c-1; the rejected
side is the negative from step c, cut as `per_step.rejected` says (to its end,
or just the pit step: `credit.per_step_pair`); the chosen side is a correct
continuation from the same prefix: the shortest successful rollout from it,
or, when c is the first step and no rollout from the bare problem succeeded,
a correct self-sample, else the teacher's solution. Negatives without a pit
give no pair; pairs are capped per problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config
from orchestrator.contract import KEY_NEUTRAL, Files, GridPoint, In, StageResult
from orchestrator.credit import first_pit, per_step_pair
from orchestrator.records import read_rows, write_rows

VERSION = "1"
INPUTS = (In.ROLLOUTS, In.SAMPLES, In.DATA)


@dataclass(frozen=True)
class StepPairsParams:
    pit_rule: str
    max_pairs_per_problem: int
    n: int
    # Added after artifacts existed: to_end, the behaviour before, is the key-neutral value;
    # the config's default (through_pit) is not, so it never reuses those artifacts.
    rejected: str = field(default="to_end", metadata={KEY_NEUTRAL: True})

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> StepPairsParams:
        per_step = config.per_step
        return cls(per_step.pit_rule, per_step.max_pairs_per_problem, point.n, per_step.rejected)


@dataclass(frozen=True)
class StepPairsResult(StageResult):
    pairs: int
    negatives: int
    negatives_without_pit: int
    chosen_from_rollout: int
    chosen_from_sample: int
    chosen_from_teacher: int
    mean_pit_step: float


def chosen_continuation(row: dict, pit: int, correct_samples: dict[str, str],
                        teacher: dict[str, str]) -> tuple[str, str] | None:
    """(continuation, source) that is correct from the prefix before step `pit`."""
    prefix = pit - 1
    wins = [c for c, ok in zip(row["continuations"][prefix], row["successes"][prefix], strict=True)
            if ok]
    if wins:   # from the bare problem these are the self-samples themselves
        return min(wins, key=len), "rollout" if prefix else "sample"
    if prefix == 0 and row["problem_id"] in correct_samples:
        return correct_samples[row["problem_id"]], "sample"
    if prefix == 0 and row["problem_id"] in teacher:
        return teacher[row["problem_id"]], "teacher"
    return None


def run(params: StepPairsParams, inputs: dict[str, Path], out: Path) -> StepPairsResult:
    rows = read_rows(inputs[In.ROLLOUTS] / Files.ROLLOUTS)
    samples = read_rows(inputs[In.SAMPLES] / Files.SAMPLES)
    correct = {}
    for s in sorted((s for s in samples if s["correct"]), key=lambda s: len(s["completion"])):
        correct.setdefault(s["problem_id"], s["completion"])
    teacher = {r["problem_id"]: r["completion"]
               for r in read_rows(inputs[In.DATA] / Files.DATA, limit=params.n)}
    pairs, sources, pits, no_pit = [], {"rollout": 0, "sample": 0, "teacher": 0}, [], 0
    per_problem: dict[str, set] = {}
    for row in rows:
        pit = first_pit(row["values"], params.pit_rule)
        choice = chosen_continuation(row, pit, correct, teacher) if pit else None
        if choice is None:
            no_pit += 1
            continue
        pair = per_step_pair(row["prompt"], row["steps"], pit, choice[0], params.rejected)
        seen = per_problem.setdefault(row["problem_id"], set())
        if (pair.prompt, pair.rejected) in seen or len(seen) >= params.max_pairs_per_problem:
            continue
        seen.add((pair.prompt, pair.rejected))
        sources[choice[1]] += 1
        pits.append(pit)
        pairs.append({"problem_id": row["problem_id"], "prompt": pair.prompt, "chosen": pair.chosen,
                      "rejected": pair.rejected, "rejected_eos": pair.rejected_eos, "pit": pit,
                      "values": row["values"],
                      "advantages": row["advantages"], "chosen_source": choice[1]})
    write_rows(out / Files.PAIRS, pairs)
    return StepPairsResult(len(pairs), len(rows), no_pit, sources["rollout"], sources["sample"],
                           sources["teacher"], sum(pits) / len(pits) if pits else float("nan"))
