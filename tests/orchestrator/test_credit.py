"""Per-step credit assignment with constructed solutions and a stand-in policy.

The stand-in policy knows each problem's correct steps and succeeds from a
prefix with a probability fixed per prefix, returning exactly round(p * K)
correct continuations out of K. Values, advantages, the first pit and the pairs
it gives are therefore known exactly, and the real `rollouts` and `step_pairs`
stage functions are run against it.
"""

from __future__ import annotations

import pytest

import orchestrator.backends
from orchestrator.backends.base import Completion
from orchestrator.config import config_from_dict
from orchestrator.contract import GridPoint
from orchestrator.credit import (
    dedup_key,
    first_pit,
    normalise_step,
    outcome_pairs,
    per_step_pair,
    prefix_prompts,
    rft_positives,
    step_advantages,
    step_values,
)
from orchestrator.records import read_rows, write_rows
from orchestrator.stages import rollouts, step_pairs

PROMPT = "Question: Mia has 7 shells. She finds 5 more. She gives away 3. How many?\nAnswer:\n"
GOOD = ["7 + 5 = 12", "12 - 3 = 9", "#### 9"]
# Wrong at step 2 (12 + 3), so everything after it is lost.
BAD = ["7 + 5 = 12", "12 + 3 = 15", "#### 15"]
# A spurious first step (7 + 6 = 13) the policy can still sometimes recover from.
SPURIOUS = ["7 + 6 = 13", "13 - 4 = 9", "9 + 1 = 10", "#### 10"]


def text(steps):
    return "\n".join(steps)


class StandInPolicy:
    """Succeeds from `prefix` in round(p * n) of n rollouts, p from `success`."""

    def __init__(self, success: dict[str, float]):
        self.success = success
        self.calls: list[list[str]] = []

    def generate(self, prompts, request):
        n = request.n
        self.calls.append(list(prompts))
        out = []
        for prompt in prompts:
            wins = round(self.success[prompt] * n)
            done = prompt[len(PROMPT):].count("\n")
            right = text(GOOD[done:]) if done < len(GOOD) else "#### 9"
            out.append([Completion(right if i < wins else "#### 0", 5, True) for i in range(n)])
        return out

    def close(self):
        pass


def prefix(steps, i):
    return PROMPT + "".join(s + "\n" for s in steps[:i])


# ---------------------------------------------------------------- pure rules


def test_prefix_prompts_end_at_step_boundaries():
    assert prefix_prompts(PROMPT, BAD) == [PROMPT, PROMPT + "7 + 5 = 12\n",
                                           PROMPT + "7 + 5 = 12\n12 + 3 = 15\n"]


def test_values_and_advantages():
    values = step_values([[True, True, True, False], [True, True, False, False], [False] * 4],
                         final_correct=False)
    assert values == [0.75, 0.5, 0.0, 0.0]
    assert step_advantages(values) == [-0.25, -0.5, 0.0]


@pytest.mark.parametrize("values, rule, pit", [
    ([0.75, 0.75, 0.0, 0.0], "first_zero", 2),
    ([0.75, 0.75, 0.0, 0.0], "min_advantage", 2),
    ([0.75, 0.25, 0.25, 0.0, 0.0], "first_zero", 3),      # slow decline: the pit is where it hits 0
    ([0.75, 0.25, 0.25, 0.0, 0.0], "min_advantage", 1),   # the biggest drop was step 1
    ([0.0, 0.0, 0.0], "first_zero", 1),                   # hopeless from the start
    ([0.0, 0.0, 0.0], "min_advantage", None),             # no step lowers the value
    ([0.5, 1.0, 1.0, 0.0], "first_zero", 3),              # the answer line itself is the mistake
])
def test_first_pit_rules(values, rule, pit):
    assert first_pit(values, rule) == pit


def test_unknown_pit_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown pit rule"):
        first_pit([1.0, 0.0], "last_zero")


def test_per_step_pair_shares_the_prefix_before_the_pit():
    pair = per_step_pair(PROMPT, BAD, 2, "12 - 3 = 9\n#### 9")
    assert pair.prompt == PROMPT + "7 + 5 = 12\n"
    assert pair.rejected == "12 + 3 = 15\n#### 15"
    assert pair.chosen == "12 - 3 = 9\n#### 9"


# ---------------------------------------------------------------- dedup, RFT, outcome pairs


def test_step_normalisation_ignores_spacing_annotations_and_words():
    same = ["7 + 5 = 12", "7+5=12", "7 + 5 = <<7+5=12>>12", "Tom has 7 + 5 = 12 apples.",
            "7 + 5 = 12.0", "He buys 5 more: 7 + 5 = 12.", "Tom has 7 apples. 7 + 5 = 12"]
    assert len({normalise_step(s) for s in same}) == 1
    assert normalise_step("7 + 5 = 12") != normalise_step("5 + 7 = 12")
    assert normalise_step("0.5 * 4 = 2") != normalise_step("5 * 4 = 2")
    assert normalise_step("#### 12") == normalise_step("####  12")


def sample(pid, completion, correct, index=0):
    return {"problem_id": pid, "prompt": PROMPT, "answer": "9", "sample_index": index,
            "completion": completion, "correct": correct}


def test_rft_positives_dedup_by_steps_and_cap():
    samples = [sample("p1", "7 + 5 = 12\n12 - 3 = 9\n#### 9", True),
               sample("p1", "7+5=12\n12-3=9\n####9", True),                     # same steps
               sample("p1", "5 + 7 = 12\n12 - 3 = 9\n#### 9", True),            # another path
               sample("p1", "7 + 5 = 12\n#### 12", False),                      # wrong
               sample("p2", "7 + 5 = 12\n12 - 3 = 9\n#### 9", True)]
    kept = rft_positives(samples, max_per_problem=4)
    assert [s["completion"] for s in kept] == [samples[0]["completion"], samples[2]["completion"],
                                                samples[4]["completion"]]
    assert len(rft_positives(samples, max_per_problem=1)) == 2
    assert len(rft_positives(samples, max_per_problem=4, mode="exact")) == 4
    assert dedup_key(samples[0]["completion"]) == dedup_key(samples[1]["completion"])


def test_outcome_pairs_need_both_kinds_and_are_capped():
    samples = [sample("p1", "a\n#### 9", True), sample("p1", "b\n#### 9", True),
               sample("p1", "c\n#### 1", False), sample("p1", "c\n#### 1", False),
               sample("p1", "d\n#### 2", False),
               sample("p2", "x\n#### 9", True),                      # no negative: no pair
               sample("p3", "y\n#### 3", False)]                     # no positive: no pair
    pairs = outcome_pairs(samples, max_pairs=5, seed=0)
    assert {p["problem_id"] for p in pairs} == {"p1"}
    assert len(pairs) == 2                                           # min(2 distinct good, 2 distinct bad)
    assert all(p["chosen"].endswith("#### 9") and not p["rejected"].endswith("#### 9") for p in pairs)
    assert len(outcome_pairs(samples, max_pairs=1, seed=0)) == 1
    assert outcome_pairs(samples, 5, seed=0) == outcome_pairs(samples, 5, seed=0)


# ---------------------------------------------------------------- the stages, with the stand-in


@pytest.fixture
def stand_in(monkeypatch):
    success = {prefix(BAD, 0): 0.75, prefix(BAD, 1): 0.75, prefix(BAD, 2): 0.0,
               prefix(SPURIOUS, 1): 0.25, prefix(SPURIOUS, 2): 0.25, prefix(SPURIOUS, 3): 0.0}
    policy = StandInPolicy(success)
    monkeypatch.setattr(orchestrator.backends, "make_backend", lambda *a, **k: policy)
    return policy


def run_rollouts(tmp_path, samples, k=4, negatives=4, v0_from_samples=False, early_stop=False):
    (tmp_path / "samples").mkdir()
    write_rows(tmp_path / "samples" / "samples.jsonl", samples)
    config = config_from_dict({
        "sampling": {"temperature": 0.7 if v0_from_samples else 1.0},
        "per_step": {"rollouts": k, "negatives_per_problem": negatives, "temperature": 0.7,
                     "early_stop": early_stop}})
    params = rollouts.RolloutParams.from_config(config, GridPoint(n=1, seed=0))
    assert params.v0_from_samples == v0_from_samples
    out = tmp_path / "rollouts"
    out.mkdir()
    result = rollouts.run(params, {"model": tmp_path, "samples": tmp_path / "samples"}, out)
    return result, read_rows(out / "rollouts.jsonl")


def test_rollouts_estimate_known_values(tmp_path, stand_in):
    samples = [sample("p1", text(BAD), False, 0), sample("p1", text(GOOD), True, 1),
               sample("p1", text(BAD), False, 2),              # duplicate negative: rolled out once
               sample("p1", text(SPURIOUS), False, 3)]
    result, rows = run_rollouts(tmp_path, samples)
    assert [r["sample_index"] for r in rows] == [0, 3]
    bad, spurious = rows
    assert bad["values"] == [0.75, 0.75, 0.0, 0.0]
    assert bad["advantages"] == [0.0, -0.75, 0.0]
    assert spurious["values"] == [0.75, 0.25, 0.25, 0.0, 0.0]
    # the bare problem is a prefix of both negatives: one batched call, no repeats
    assert len(stand_in.calls) == 1
    # 3 prefixes of BAD + 4 of SPURIOUS, the bare problem shared: 6 distinct prompts
    assert len(stand_in.calls[0]) == len(set(stand_in.calls[0])) == result.unique_prefixes == 6
    assert result.rollouts == 6 * 4 and result.prefixes == 7


def test_v0_comes_from_the_samples_when_drawn_at_the_rollout_temperature(tmp_path, stand_in):
    samples = [sample("p1", text(BAD), False, 0), sample("p1", text(GOOD), True, 1),
               sample("p1", text(SPURIOUS), False, 2), sample("p1", text(GOOD), True, 3)]
    result, rows = run_rollouts(tmp_path, samples, v0_from_samples=True)
    assert [r["values"][0] for r in rows] == [0.5, 0.5]          # 2 of the 4 samples are right
    assert rows[0]["values"][1:] == [0.75, 0.0, 0.0]              # later prefixes: rollouts
    assert PROMPT not in stand_in.calls[0]                        # the bare problem is not rolled out
    assert result.unique_prefixes == 5 and result.prefixes == 5


GOOD_TEXT = text(GOOD)


def run_step_pairs(tmp_path, rule, teacher_solution=GOOD_TEXT, max_pairs=4):
    (tmp_path / "data").mkdir(exist_ok=True)
    write_rows(tmp_path / "data" / "data.jsonl",
               [{"problem_id": "p1", "prompt": PROMPT, "answer": "9", "completion": teacher_solution}])
    out = tmp_path / f"pairs-{rule}-{len(list(tmp_path.glob('pairs-*')))}"
    out.mkdir()
    params = step_pairs.StepPairsParams(rule, max_pairs, n=1)
    result = step_pairs.run(params, {"rollouts": tmp_path / "rollouts", "samples": tmp_path / "samples",
                                     "data": tmp_path / "data"}, out)
    return result, read_rows(out / "pairs.jsonl")


def test_step_pairs_at_the_first_pit(tmp_path, stand_in):
    run_rollouts(tmp_path, [sample("p1", text(BAD), False, 0), sample("p1", text(SPURIOUS), False, 1)])
    result, pairs = run_step_pairs(tmp_path, "first_zero")
    bad, spurious = pairs
    assert bad["pit"] == 2
    assert bad["prompt"] == PROMPT + "7 + 5 = 12\n"
    assert bad["rejected"] == "12 + 3 = 15\n#### 15"
    assert bad["chosen"] == "12 - 3 = 9\n#### 9"                # a successful rollout from that prefix
    assert bad["chosen_source"] == "rollout"
    assert spurious["pit"] == 3 and spurious["rejected"] == "9 + 1 = 10\n#### 10"
    assert result.pairs == 2 and result.chosen_from_rollout == 2


def test_min_advantage_rule_blames_the_spurious_step(tmp_path, stand_in):
    run_rollouts(tmp_path, [sample("p1", text(SPURIOUS), False, 0)])
    _, pairs = run_step_pairs(tmp_path, "min_advantage")
    assert pairs[0]["pit"] == 1
    assert pairs[0]["prompt"] == PROMPT
    assert pairs[0]["rejected"] == text(SPURIOUS)
    assert pairs[0]["chosen"] == text(GOOD)


def test_hopeless_first_step_falls_back_to_a_correct_sample_then_the_teacher(tmp_path, monkeypatch):
    policy = StandInPolicy({prefix(BAD, 0): 0.0, prefix(BAD, 1): 0.0, prefix(BAD, 2): 0.0})
    monkeypatch.setattr(orchestrator.backends, "make_backend", lambda *a, **k: policy)
    correct = "5 + 7 = 12\n12 - 3 = 9\n#### 9"
    run_rollouts(tmp_path, [sample("p1", text(BAD), False, 0), sample("p1", correct, True, 1)])
    result, pairs = run_step_pairs(tmp_path, "first_zero")
    assert pairs[0]["pit"] == 1 and pairs[0]["chosen"] == correct
    assert result.chosen_from_sample == 1

    rows = read_rows(tmp_path / "samples" / "samples.jsonl")
    write_rows(tmp_path / "samples" / "samples.jsonl", [r for r in rows if not r["correct"]])
    result, pairs = run_step_pairs(tmp_path, "first_zero", teacher_solution="teacher says\n#### 9")
    assert pairs[0]["chosen"] == "teacher says\n#### 9" and result.chosen_from_teacher == 1


def test_pairs_are_capped_per_problem(tmp_path, stand_in):
    run_rollouts(tmp_path, [sample("p1", text(BAD), False, 0), sample("p1", text(SPURIOUS), False, 1)])
    result, pairs = run_step_pairs(tmp_path, "first_zero", max_pairs=1)
    assert len(pairs) == 1 and result.pairs == 1


def test_rft_union_with_teacher_data_drops_copies_of_the_teacher_solution():
    samples = [sample("p1", "7+5=12\n12-3=9\n####9", True),                 # the teacher's steps
               sample("p1", "5 + 7 = 12\n12 - 3 = 9\n#### 9", True)]         # a new path
    kept = rft_positives(samples, max_per_problem=4, known={"p1": [text(GOOD)]})
    assert [s["completion"] for s in kept] == [samples[1]["completion"]]
    # the cap counts self-generated positives only
    assert len(rft_positives(samples, max_per_problem=1, known={"p1": ["other\n#### 9"]})) == 1


def _rollout_row(successes: list[list[bool]]) -> dict:
    return {"successes": successes}


def test_pit_agreement_counts_hits_early_and_late_pits_per_k():
    from orchestrator.credit import pit_agreement, rollout_counts

    assert rollout_counts(8) == [1, 2, 4, 8] and rollout_counts(6) == [1, 2, 4, 6]
    rows = [
        # step 2 is wrong: with 4 rollouts the prefix after step 1 still succeeds once
        _rollout_row([[True] * 4, [False, False, False, True], [False] * 4]),
        # step 1 is wrong and every rollout after it fails: a hit at every k
        _rollout_row([[True, False, True, False], [False] * 4]),
        # the oracle finds nothing wrong (cut off): the pit counts as found, not judged
        _rollout_row([[True] * 4, [False] * 4]),
        # step 3 is wrong but the prefix after step 1 already fails 4 times: early
        _rollout_row([[True] * 4, [False] * 4, [False] * 4, [False] * 4]),
    ]
    truth = {0: 2, 1: 1, 2: None, 3: 3}
    by_k = {r["k"]: r for r in pit_agreement(rows, truth, "first_zero", [1, 4])}
    # k = 1: row 0's pit moves to step 1 (its first rollout after step 1 failed): early
    assert by_k[1]["pits"] == 4 and by_k[1]["precision"] == pytest.approx(1 / 4)
    assert by_k[1]["early"] == pytest.approx(2 / 4) and by_k[1]["recall"] == pytest.approx(1 / 3)
    assert by_k[4]["precision"] == pytest.approx(2 / 4) and by_k[4]["recall"] == pytest.approx(2 / 3)
    assert by_k[4]["early"] == pytest.approx(1 / 4) and by_k[4]["late"] == 0.0
    assert by_k[4]["with_wrong_line"] == 3 and by_k[4]["negatives"] == 4


LOST = ["7 + 5 = 12", "12 + 3 = 15", "15 - 1 = 14", "#### 14"]   # two steps after its pit


@pytest.mark.parametrize("v0_from_samples", [False, True])
def test_early_stopped_rollouts_find_the_same_pits_for_fewer_prefixes(tmp_path, monkeypatch,
                                                                      v0_from_samples):
    success = {prefix(LOST, 0): 0.75, prefix(LOST, 1): 0.75, prefix(LOST, 2): 0.0,
               prefix(LOST, 3): 0.0, prefix(SPURIOUS, 1): 0.25, prefix(SPURIOUS, 2): 0.25,
               prefix(SPURIOUS, 3): 0.0}
    samples = [sample("p1", text(LOST), False, 0), sample("p1", text(SPURIOUS), False, 1),
               sample("p1", text(GOOD), True, 2)]
    found = {}
    for early in (False, True):
        policy = StandInPolicy(success)
        monkeypatch.setattr(orchestrator.backends, "make_backend", lambda *a, p=policy, **k: p)
        folder = tmp_path / str(early)
        folder.mkdir()
        result, rows = run_rollouts(folder, samples, v0_from_samples=v0_from_samples,
                                    early_stop=early)
        found[early] = (result, rows, policy)
    (full, full_rows, _), (early, early_rows, policy) = found[False], found[True]
    pits = [[first_pit(r["values"]) for r in rows] for rows in (full_rows, early_rows)]
    assert pits[0] == pits[1] == [2, 3]
    # LOST is not rolled out after its pit; SPURIOUS's pit is its last prefix: nothing saved
    assert early_rows[0]["rolled_out"] == 3 and early_rows[0]["values"][-1] == 0.0
    assert full_rows[0]["rolled_out"] == 4
    assert early.prefixes_skipped == 1 and early.stopped_at_pit == 2
    assert early.rollouts == full.rollouts - 4 and early.unique_prefixes == full.unique_prefixes - 1
    assert prefix(LOST, 3) not in [p for call in policy.calls for p in call]
    assert len(policy.calls) == (3 if v0_from_samples else 4)       # one call per depth
    assert [len(r["successes"]) for r in early_rows] == [3, 4]
    from orchestrator.show import render_rollouts

    shown = render_rollouts(early_rows[0]).splitlines()
    assert "<- first_zero" in shown[-3] and shown[-1].endswith("(after the pit)")


def test_early_stop_needs_the_first_zero_rule():
    from orchestrator.config_schema import ConfigError

    with pytest.raises(ConfigError, match="per_step.early_stop: needs per_step.pit_rule: first_zero"):
        config_from_dict({"per_step": {"early_stop": True, "pit_rule": "min_advantage"}})
