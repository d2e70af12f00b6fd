"""The arith oracle's first wrong line: the ground truth Monte Carlo pits are checked against."""

from __future__ import annotations

import time

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


# 4 + 3 - 2, then * 2, then + 5: two additive runs around a multiplication.
RUNS = "4 + 3 = 7\n7 - 2 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 15"
# The same problem in other correct styles: the oracle reads the same steps from each.
RUNS_AS = (RUNS, "4 + 3 - 2 = 5\n5 * 2 + 5 = 15\n#### 15",
           "She gives away 2: 4 - 2 = 2\nShe buys 3 more: 2 + 3 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 15")


@pytest.mark.parametrize("reference", RUNS_AS)
@pytest.mark.parametrize("candidate, wrong", [
    (RUNS, None),
    ("4 - 2 = 2\n2 + 3 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 15", None),    # reordered run
    ("4 + 3 - 2 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 15", None),            # fused, additive
    ("4 + 3 = 7\n7 - 2 = 5\n5 * 2 + 5 = 15\n#### 15", None),              # fused, * first
    ("4 - 2 + 3 = 5\nx: 2 * 5 + 5 = 15\n#### 15", None),                  # both, commuted *
    ("4 + 3 = 7, 7 - 2 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 15", None),     # two equations
    ("3 + 4 = 7\n7 - 2 = 5\n5 * 2 = <<5*2=10>>10\n10 + 5 = 15", None),    # cut off, lines right
    ("4 + 3 = 7\n7 - 2 = 5\n5 + 5 = 10\n10 * 2 = 20\n#### 20", 3),        # + 5 moved before * 2
    ("4 * 2 = 8\n8 + 3 = 11\n11 - 2 = 9\n9 + 5 = 14\n#### 14", 1),        # * 2 moved first
    ("4 + 3 = 7\n7 - 2 = 5\n5 * 2 = 11\n11 + 5 = 16\n#### 16", 3),        # wrong result
    ("4 + 3 = 7\n7 - 3 = 4\n4 * 2 = 8\n8 + 5 = 13\n#### 13", 2),          # wrong operand
    ("4 + 3 = 7\n7 + 2 = 9\n9 * 2 = 18\n18 + 5 = 23\n#### 23", 2),        # wrong operation
    ("4 + 3 = 7\n7 + 3 = 10\n10 * 2 = 20\n20 + 5 = 25\n#### 25", 2),      # a step twice
    ("4 + 3 - 2 = 6\n6 * 2 = 12\n12 + 5 = 17\n#### 17", 1),               # fused, wrong result
    ("4 + 3 = 7\n7 - 2 * 2 = 10\n10 + 5 = 15\n#### 15", 2),               # fused, + before *
    ("4 + 3 - 2 = 5\n5 * 2 + 5 - 0 = 15\n#### 15", 2),                    # three on one line
    ("4 + 3 = 7\n7 - 2 = 5\n#### 5", 3),                                  # early ####
    ("4 + 3 = 7\n7 - 2 = 5\n5 * 2 = 10\n10 + 5 = 15\n15 + 0 = 15\n#### 15", 5),  # late ####
    ("4 + 3 = 7\n7 - 2 = 5\n5 * 2 = 10\n10 + 5 = 15\n#### 14", 5),        # wrong ####
    ("4 + 3 = 7\nthen she gives two away\n5 * 2 = 10\n10 + 5 = 15\n#### 15", 2),  # no equation
    ("4 + 3 = 7\n2 - 7 = -5\n-5 * 2 = -10\n-10 + 5 = -5\n#### -5", 2),    # - does not commute
])
def test_first_wrong_line_on_every_path(reference, candidate, wrong):
    assert first_wrong_line(reference, split_steps(candidate)) == wrong


def test_a_reorder_whose_value_goes_below_zero_is_wrong():
    """She cannot give away 3 of 2: the order is not a path of the story."""
    reference = "2 + 5 = 7\n7 - 3 = 4\n#### 4"
    assert first_wrong_line(reference, split_steps("2 - 3 = -1\n-1 + 5 = 4\n#### 4")) == 1
    assert first_wrong_line(reference, split_steps("2 + 5 - 3 = 4\n#### 4")) is None


def test_the_oracle_is_bounded_on_hostile_lines():
    """Model outputs are data: long digit runs, operator soup and many lines end fast."""
    lines = ["9" * 100_000, "1 + " * 30_000, "1 +" + " " * 50_000 + "1 = 2", "-" * 80_000,
             "12 - 3 = 9 " * 10_000, "<<" * 40_000, "= " * 40_000]
    started = time.perf_counter()
    for line in lines:
        assert first_wrong_line(REFERENCE, [line]) == 1
    many = ["7 + 5 = 12"] + ["12 * 1 = 12"] * 20_000
    assert first_wrong_line(REFERENCE, many) == 2
    assert time.perf_counter() - started < 5
