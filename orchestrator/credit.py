"""Per-step credit assignment and the datasets built from self-generated samples.

Pure functions (no model, no I/O) so each rule can be tested with constructed
solutions and a stand-in policy whose success probabilities are known:

- `prefix_prompts`: the prompts rollouts continue from: the problem plus the
  first i steps of a solution, for i = 0 .. L-1.
- `step_values`: V_i, the fraction of K rollouts from the prefix after step i
  that reach the right answer (Math-Shepherd's soft estimate; Setlur et al.
  2024 §4). V_L is the solution's own grade.
- `step_advantages`: A_i = V_i - V_{i-1}, the value change step i causes.
- `first_pit`: the critical step of an incorrect solution, by a named rule.
- `per_step_pair`: the preference pair at the pit.
- `pit_agreement`: how often the pit, from the first k of the K rollouts, is the
  first wrong line the task's oracle names (precision and recall per k).
- `dedup_key`, `rft_positives`, `outcome_pairs`: RFT data and dpo_negative pairs.

Steps are lines (`tasks.base.split_steps`), as in Self-Explore (Hwang et al. 2024).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from orchestrator.tasks.base import join_steps

PIT_RULES = ("first_zero", "min_advantage")


def prefix_text(prompt: str, steps: list[str], i: int) -> str:
    """The problem's prompt followed by the first i steps, each ending in a newline."""
    return prompt + "".join(step + "\n" for step in steps[:i])


def prefix_prompts(prompt: str, steps: list[str]) -> list[str]:
    """Rollout prompts after 0 .. L-1 steps (after all L steps the answer is already given)."""
    return [prefix_text(prompt, steps, i) for i in range(len(steps))]


def step_values(successes: list[list[bool]], final_correct: bool) -> list[float]:
    """[V_0, ..., V_L] from rollout outcomes per prefix (i = 0 .. L-1) and the solution's grade."""
    values = [sum(outcomes) / len(outcomes) for outcomes in successes]
    return values + [1.0 if final_correct else 0.0]


def step_advantages(values: list[float]) -> list[float]:
    """[A_1, ..., A_L], A_i = V_i - V_{i-1}."""
    return [values[i] - values[i - 1] for i in range(1, len(values))]


def first_pit(values: list[float], rule: str = "first_zero") -> int | None:
    """The 1-based index of the critical step, or None when the solution has none.

    first_zero: the first step after which no rollout succeeds (V_i = 0), the
      "first pit" of Self-Explore; with K rollouts this is the first step whose
      best-of-K value is zero, as in the paper's BoK(pi_sft) estimate.
    min_advantage: the step with the lowest advantage A_i (the earliest on ties),
      provided it lowers the value (A_i < 0).
    """
    if rule == "first_zero":
        return next((i for i in range(1, len(values)) if values[i] == 0.0), None)
    if rule == "min_advantage":
        advantages = step_advantages(values)
        if not advantages:
            return None
        lowest = min(advantages)
        return advantages.index(lowest) + 1 if lowest < 0 else None
    raise ValueError(f"unknown pit rule {rule!r}; expected one of {PIT_RULES}")


REJECTED_SIDES = ("to_end", "through_pit", "pit_step")


@dataclass(frozen=True)
class StepPair:
    prompt: str      # what both sides continue
    chosen: str      # a correct continuation (to the answer; ends in EOS)
    rejected: str    # the incorrect side, as `per_step_pair`'s mode cuts it
    rejected_eos: bool = True   # whether DPO appends EOS to the rejected side


def per_step_pair(prompt: str, steps: list[str], pit: int, chosen_continuation: str,
                  rejected: str = "to_end") -> StepPair:
    """The preference pair at the pit (1-based step `pit` of the negative `steps`), its
    rejected side cut as `rejected` says (docs/data_types.md shows each on one example):

    to_end: prompt = problem + steps before the pit; rejected = the negative from the
      pit to its (wrong) answer, with EOS. DPO then also pushes down the locally
      correct tokens after the error.
    through_pit (Setlur et al. 2024): prompt = the problem; both sides start with the
      steps before the pit: chosen = those + the correct continuation (with EOS),
      rejected = those + the pit step, truncated there: no EOS (an EOS after the pit
      would also teach "stop after this step"). The shared prefix cancels in DPO's
      log-ratio difference, but an NLL term on the chosen side (RPO) trains on it.
    pit_step (Self-Explore, Hwang et al. 2024): prompt = problem + steps before the pit;
      rejected = the pit step alone, no EOS; chosen = the correct continuation with EOS.

    Both sides share everything before the pit step, so the first tokens that differ are
    the pit step's. A cut rejected side keeps the pit step's newline: the step is over,
    what follows it is not judged."""
    before = prefix_text(prompt, steps, pit - 1)
    if rejected == "to_end":
        return StepPair(before, chosen_continuation, join_steps(steps[pit - 1:]))
    pit_line = steps[pit - 1] + "\n"
    if rejected == "pit_step":
        return StepPair(before, chosen_continuation, pit_line, rejected_eos=False)
    if rejected == "through_pit":
        shared = before[len(prompt):]
        return StepPair(prompt, shared + chosen_continuation, shared + pit_line,
                        rejected_eos=False)
    raise ValueError(f"unknown rejected side {rejected!r}; expected one of {REJECTED_SIDES}")


def rollout_counts(k_max: int) -> list[int]:
    """1, 2, 4, ... up to and including K: the k at which a pit's accuracy is reported."""
    ks = [1]
    while ks[-1] * 2 < k_max:
        ks.append(ks[-1] * 2)
    return sorted(set(ks + [k_max]))


def pit_agreement(rows: list[dict], wrong_line: dict[int, int | None], rule: str,
                  ks: list[int]) -> list[dict]:
    """Per k: the pit from each rolled-out negative's first k rollouts per prefix
    (`rows` as the rollouts stage writes them) against `wrong_line` (row index ->
    the oracle's first wrong line, None when the oracle finds none).

    precision: the share of pits found that are the wrong line; recall: the share of
    negatives with a wrong line whose pit is it; early: the share of pits found before
    the wrong line (a correct prefix judged hopeless: the policy is too weak to finish
    it in k tries); late: after it (rollouts that recover from the error, or luck)."""
    table = []
    for k in ks:
        hits = early = late = found = 0
        for i, row in enumerate(rows):
            values = step_values([outcomes[:k] for outcomes in row["successes"]], False)
            pit, truth = first_pit(values, rule), wrong_line.get(i)
            if pit is None:
                continue
            found += 1
            if truth is None:
                continue
            hits, early, late = hits + (pit == truth), early + (pit < truth), late + (pit > truth)
        with_truth = sum(wrong_line.get(i) is not None for i in range(len(rows)))
        table.append({"k": k, "negatives": len(rows), "with_wrong_line": with_truth,
                      "pits": found, "precision": hits / found if found else float("nan"),
                      "recall": hits / with_truth if with_truth else float("nan"),
                      "early": early / found if found else float("nan"),
                      "late": late / found if found else float("nan")})
    return table


# ---------------------------------------------------------------- RFT data

_ANNOTATION = re.compile(r"<<[^>]*>>")
# A "." belongs to an equation only inside a number: "= 8." ends a sentence.
_EQUATION = re.compile(r"(?:[-+*/x×÷^()\s]|\d+(?:\.\d+)?)+=(?:[-+*/()\s]|\d+(?:\.\d+)?)+")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _normalise_number(match: re.Match) -> str:
    text = match.group(0)
    return text.rstrip("0").rstrip(".") if "." in text else text.lstrip("0") or "0"


def normalise_step(step: str) -> str:
    """A step reduced to what it computes: equations if it has any, else its words."""
    text = _ANNOTATION.sub("", step).lower().replace(",", "")
    text = re.sub(r"#+\s*", "#### ", text)          # "####9" and "#### 9" are one answer line
    equations = [re.sub(r"\s+", "", e) for e in _EQUATION.findall(text) if re.search(r"\d", e)]
    if equations:
        return ";".join(_NUMBER.sub(_normalise_number, e) for e in equations)
    return " ".join(re.sub(r"[^\w#]+", " ", text).split())


def dedup_key(solution: str, mode: str = "steps") -> str:
    from orchestrator.tasks.base import split_steps

    if mode == "exact":
        return solution.strip()
    return "\n".join(normalise_step(s) for s in split_steps(solution))


def rft_positives(samples: list[dict], max_per_problem: int, mode: str = "steps",
                  known: dict[str, list[str]] | None = None) -> list[dict]:
    """Correct samples, de-duplicated per problem and capped; order preserved.

    `known` holds solutions already in the training set per problem (the
    teacher's, when RFT trains on D_syn union D+): a sample that duplicates
    one of them adds nothing and is dropped too.
    """
    kept: list[dict] = []
    seen: dict[str, set[str]] = {pid: {dedup_key(s, mode) for s in solutions}
                                 for pid, solutions in (known or {}).items()}
    counts: dict[str, int] = {}
    for sample in samples:
        if not sample["correct"]:
            continue
        keys = seen.setdefault(sample["problem_id"], set())
        key = dedup_key(sample["completion"], mode)
        if key in keys or counts.get(sample["problem_id"], 0) >= max_per_problem:
            continue
        keys.add(key)
        counts[sample["problem_id"]] = counts.get(sample["problem_id"], 0) + 1
        kept.append(sample)
    return kept


def outcome_pairs(samples: list[dict], max_pairs: int, seed: int) -> list[dict]:
    """dpo_negative pairs: per problem, distinct correct samples against distinct
    incorrect ones, matched in a seeded random order."""
    by_problem: dict[str, list[dict]] = {}
    for sample in samples:
        by_problem.setdefault(sample["problem_id"], []).append(sample)
    rng = random.Random(seed)
    pairs = []
    for problem_id, group in by_problem.items():
        good = _distinct([s for s in group if s["correct"]])
        bad = _distinct([s for s in group if not s["correct"]])
        rng.shuffle(good)
        rng.shuffle(bad)
        for chosen, rejected in list(zip(good, bad, strict=False))[:max_pairs]:  # the shorter list
            pairs.append({"problem_id": problem_id, "prompt": chosen["prompt"],
                          "chosen": chosen["completion"], "rejected": rejected["completion"]})
    return pairs


def _distinct(samples: list[dict]) -> list[dict]:
    seen, out = set(), []
    for sample in samples:
        if sample["completion"] not in seen:
            seen.add(sample["completion"])
            out.append(sample)
    return out
