"""The arith oracle's first wrong line: the ground truth Monte Carlo pits are checked against."""

from __future__ import annotations

import pytest

from orchestrator.tasks.arith import ArithTask, first_wrong_line
from orchestrator.tasks.base import split_steps

REFERENCE = "She finds 5 more: 7 + 5 = 12\nShe gives away 3: 12 - 3 = 9\n#### 9"


@pytest.mark.parametrize("candidate, wrong", [
    (REFERENCE, None),                                                   # the solution itself
    ("7 + 5 = 12\n12 - 3 = 9\n#### 9", None),                            # bare lines
    ("She finds 5 more: 5 + 7 = 12\n12 - 3 = 9\n#### 9", None),          # + commutes
    ("She finds 5 more: 7 + 5 = 13\n13 - 3 = 10\n#### 10", 1),           # wrong result
    ("She finds 5 more: 7 + 3 = 10\n10 - 5 = 5\n#### 5", 1),             # wrong operand
    ("She finds 5 more: 7 - 5 = 2\n2 - 3 = -1\n#### -1", 1),             # wrong operation
    ("She finds 5 more: 7 + 5 = 12\nShe gives away 3: 12 + 3 = 15\n#### 15", 2),
    ("She finds 5 more: 7 + 5 = 12\nShe gives away 3: 3 - 12 = -9\n#### -9", 2),  # - does not
    ("She finds 5 more: 7 + 5 = 12\nShe gives away 3: 12 - 3 = 9\n#### 8", 3),    # wrong answer
    ("She finds 5 more: 7 + 5 = 12\n#### 12", 2),                        # answers too early
    ("7 + 5 = 12\n12 - 3 = 9\n9 - 3 = 6\n#### 6", 3),                    # an extra step
    ("She finds some more\n12 - 3 = 9\n#### 9", 1),                      # no equation
    ("She finds 5 more: 7 + 5 = 12\nShe gives away 3: 12 - 3 = 9", None),  # cut off, lines right
    ("7 + 5 = <<7+5=12>>12\n12 - 3 = <<12-3=9>>9\n#### 9", None),        # GSM8K's annotations
])
def test_first_wrong_line(candidate, wrong):
    assert first_wrong_line(REFERENCE, split_steps(candidate)) == wrong


def test_every_reference_solution_of_the_task_is_right_and_any_changed_result_is_caught():
    task = ArithTask(seed=3, n_train=200, n_test=10)
    for problem in task.split("train"):
        steps = split_steps(problem.solution)
        assert first_wrong_line(problem.solution, steps) is None, problem.solution
        for i in range(len(steps) - 1):        # bump the result of step i by one
            head, _, result = steps[i].rpartition(" ")
            broken = steps[:i] + [f"{head} {int(result) + 1}"] + steps[i + 1:]
            assert first_wrong_line(problem.solution, broken) == i + 1, broken
