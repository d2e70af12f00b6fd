"""data_check: the training data against the arith oracle. Which self-generated positives
are right at every step, which pair's chosen side is, and which pairs first differ exactly
at the rejected side's first wrong line; on real task problems, rows as the stages write
them."""

from __future__ import annotations

import math

from orchestrator.config import config_from_dict
from orchestrator.credit_check import reference_solutions
from orchestrator.data_check import check_rows, first_difference
from orchestrator.tasks import make_task
from orchestrator.tasks.base import split_steps


def _wrong_at(solution: str, line: int) -> str:
    """The solution with the result of its `line`-th step off by one."""
    steps = split_steps(solution)
    head, _, result = steps[line - 1].rpartition(" ")
    steps[line - 1] = f"{head} {int(result) + 1}"
    return "\n".join(steps)


def _setup():
    config = config_from_dict({"task": {"n_train": 60, "min_steps": 2, "max_steps": 2},
                               "grid": {"sizes": [50]}})
    problems = make_task(config.task.source, 60, 0).split("train")[:3]
    return problems, reference_solutions(config.task.source, config.task.n_train)


def test_first_difference_is_one_based_and_handles_prefixes():
    assert first_difference(["a", "b"], ["a", "c"]) == 2
    assert first_difference(["x"], ["y", "z"]) == 1
    assert first_difference(["a"], ["a", "b"]) == 2


def test_rft_positives_are_counted_valid_only_when_every_step_is_right():
    problems, reference = _setup()
    rows = [{"problem_id": problems[0].id, "completion": problems[0].solution, "source": "teacher"},
            {"problem_id": problems[1].id, "completion": problems[1].solution, "source": "self"},
            {"problem_id": problems[2].id, "completion": _wrong_at(problems[2].solution, 1),
             "source": "self"}]
    checked = check_rows("rft_data", rows, reference)
    assert checked["rows"] == 2 and checked["valid"] == 0.5          # the teacher's not counted
    assert math.isnan(checked["first_diff_at_wrong_line"])
    assert check_rows("rft_data", rows[:1], reference) is None        # no self-generated rows


def test_pairs_count_valid_chosen_sides_and_pairs_that_differ_first_at_the_wrong_line():
    problems, reference = _setup()
    p, q = problems[0], problems[1]
    rows = [  # differs first at line 2, where the rejected side goes wrong: per-step already
        {"problem_id": p.id, "chosen": p.solution, "rejected": _wrong_at(p.solution, 2)},
        # the chosen side itself wrong at line 1, the rejected one at line 2: differ at 1
        {"problem_id": q.id, "chosen": _wrong_at(q.solution, 1),
         "rejected": _wrong_at(q.solution, 2)}]
    checked = check_rows("pairs", rows, reference)
    assert checked == {"stage": "pairs", "rows": 2, "valid": 0.5,
                       "first_diff_at_wrong_line": 0.5}
