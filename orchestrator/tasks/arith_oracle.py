"""The `arith` oracle: which line of a solution is its first wrong one.

The ground truth that Monte Carlo credit assignment is checked against
(`credit.pit_agreement`, `credit_check`). An arith problem is a start value and a
list of steps (`op operand`), and has many correct solutions (`arith.STYLES`):
a line may restate its sentence or not, hold two consecutive steps
(`7 + 5 - 3 = 9`), and the steps of a run of consecutive + / - steps may come in
any order whose values stay non-negative (a `*` keeps its place: it does not
commute with them). The oracle follows the solution line by line, tracking the
value and the steps not yet applied; the first line that does not apply remaining
steps legally with the right result is the first wrong one.

Solutions are model outputs, that is data: lines are read with bounded regular
expressions over at most `MAX_LINE` characters and never evaluated as code.
This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from orchestrator.tasks.base import split_steps

MAX_LINE = 500          # characters of a line that are read
# `a op b [op c ...] = r` (a calculator annotation `<<...>>` may sit before r). Up to 8
# operations are read so that a longer chain is one wrong equation, not its tail.
_EQUATION = re.compile(r"(-?\d+)((?:\s*[-+*]\s*-?\d+){1,8})\s*=\s*(?:<<[^>]{0,40}>>)?\s*(-?\d+)")
_OPERATION = re.compile(r"\s*([-+*])\s*(-?\d+)")
_FINAL = re.compile(r"^\s*####\s*(-?\d+)")
FUSED_MAX = 2           # steps one line may hold


class Equation(NamedTuple):
    first: int
    operations: tuple[tuple[str, int], ...]
    result: int


class Progress(NamedTuple):
    """Where a solution stands: its current value and which steps it has applied."""

    value: int
    done: tuple[bool, ...]


def equations(line: str) -> list[Equation]:
    """The equations of a line, left to right."""
    found = []
    for first, chain, result in _EQUATION.findall(line[:MAX_LINE]):
        operations = tuple((op, int(b)) for op, b in _OPERATION.findall(chain))
        found.append(Equation(int(first), operations, int(result)))
    return found


def _operate(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _standard_value(equation: Equation) -> int | None:
    """What the left side means under standard precedence (None past FUSED_MAX steps)."""
    ops = equation.operations
    if len(ops) == 1:
        return _operate(ops[0][0], equation.first, ops[0][1])
    if len(ops) == 2:
        (op1, b), (op2, c) = ops
        if op2 == "*" and op1 != "*":
            return _operate(op1, equation.first, b * c)
        return _operate(op2, _operate(op1, equation.first, b), c)
    return None


def _candidates(steps: list[tuple[str, int]], done: tuple[bool, ...]) -> range:
    """Indices of the steps that may come next: the first not applied if it is a `*`,
    else its whole additive run (those of it already applied are skipped by the caller)."""
    first = done.index(False) if False in done else len(steps)
    if first == len(steps) or steps[first][0] == "*":
        return range(first, min(first + 1, len(steps)))
    end = first
    while end < len(steps) and steps[end][0] != "*":
        end += 1
    return range(first, end)


def _take(steps: list[tuple[str, int]], at: Progress, op: str, operand: int) -> Progress | None:
    """`at` after applying a remaining step `op operand`, if one may come next and the
    value stays non-negative (a story's quantity is never below zero)."""
    for i in _candidates(steps, at.done):
        if not at.done[i] and steps[i] == (op, operand):
            value = _operate(op, at.value, operand)
            if value < 0:
                return None
            return Progress(value, at.done[:i] + (True,) + at.done[i + 1:])
    return None


def _apply_equation(steps: list[tuple[str, int]], at: Progress, equation: Equation
                    ) -> Progress | None:
    """`at` after a right equation, None for a wrong one. The first number is the value;
    `b + a` and `b * a` count as `a + b` and `a * b`; a fused equation must mean, under
    standard precedence, what its two steps give."""
    ops = equation.operations
    if len(ops) > FUSED_MAX:
        return None
    readings = [(equation.first, ops)]
    if ops[0][0] in "+*":
        readings.append((ops[0][1], ((ops[0][0], equation.first),) + ops[1:]))
    for first, reading in readings:
        if first != at.value:
            continue
        after: Progress | None = at
        for op, operand in reading:
            after = _take(steps, after, op, operand)
            if after is None:
                break
        if after is not None and _standard_value(equation) == equation.result == after.value:
            return after
    return None


def first_wrong(start: int, steps: list[tuple[str, int]], lines: list[str]) -> int | None:
    """The 1-based index of the first wrong line of `lines` (as `split_steps` gives them)
    for the problem that starts at `start` and applies `steps` ((op, operand) in the
    question's order); None when no line is wrong (a correct solution, or one cut off
    before its answer whose lines are all right).

    A line is right when each of its equations applies remaining steps legally (see the
    module docstring); `#### N` only after every step, with N the value reached. A line
    without an equation, a wrong operand, operation or result, a step out of its run, an
    extra step, or an early or wrong final answer is the first wrong line."""
    at = Progress(start, (False,) * len(steps))
    for i, line in enumerate(lines, start=1):
        final = _FINAL.match(line[:MAX_LINE])
        if final is not None:
            return None if all(at.done) and int(final.group(1)) == at.value else i
        found = equations(line)
        if not found:
            return i
        for equation in found:
            after = _apply_equation(steps, at, equation)
            if after is None:
                return i
            at = after
    return None


def reference_path(reference: str) -> tuple[int, list[tuple[str, int]]]:
    """The start value and steps of a problem, read from a correct solution of it in
    any style (a reordered one gives the same runs, so the same paths)."""
    found = [eq for line in split_steps(reference) if not _FINAL.match(line)
             for eq in equations(line)]
    if not found:
        return 0, []
    return found[0].first, [op for eq in found for op in eq.operations]


def first_wrong_line(reference: str, steps: list[str]) -> int | None:
    """`first_wrong` for the problem whose correct solution is `reference` (the task's
    `Problem.solution`); `steps` is the solution to check, as `split_steps` gives it."""
    start, path = reference_path(reference)
    return first_wrong(start, path, steps)
