"""Grading: the exact-number fast path against sending every answer through
math-verify's symbolic checker (in its time-bounded helper process)."""

from __future__ import annotations

import random

from benchmarks.common import Ratio, timed
from orchestrator.tasks import grading


def run() -> Ratio:
    rng = random.Random(0)
    golds = [str(rng.randint(0, 999)) for _ in range(300)]
    completions = [f"{g} + 0 = {g}\n#### {g if rng.random() < 0.5 else int(g) + 1}" for g in golds]

    def fast():
        return grading.grade_batch(completions, golds)

    def symbolic():
        # What grading costs when nothing short-circuits: the symbolic check for every item.
        return [grading._CHECKER.check(g, grading.extract_answer(c), 5.0)
                for c, g in zip(completions, golds, strict=True)]

    fast_s, fast_grades = timed(fast)
    slow_s, slow_grades = timed(symbolic)
    agree = sum(f.correct == bool(s) for f, s in zip(fast_grades, slow_grades, strict=True))
    return Ratio("grading", "math-verify for every answer", "exact numbers in-process",
                 slow_s, fast_s, f"{len(golds)} answers, verdicts agree on {agree}")
