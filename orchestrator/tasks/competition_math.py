"""`math`: Hendrycks MATH (competition mathematics), the paper's second benchmark.

Problems come from a local folder holding `train.jsonl` and `test.jsonl` (one
object per line: `problem`, `solution` with the answer in `\\boxed{}`, `level`
as "Level 3" or 3, `type` as "Counting & Probability"), or, when no folder is
given, from the Hugging Face hub (`EleutherAI/hendrycks_math`, its seven subject
configs concatenated in a fixed order). The original release's one-JSON-file-
per-problem tree is not read; convert it to JSONL first.

`Problem.answer` is the content of the solution's last `\\boxed{}` (or
`\\fbox{}`). Ids are the item's position in its unfiltered split
(`math-test-00042`), so filters and `n_train`/`n_test` never renumber them.

Caveat for per-step stages: steps are split at line breaks (base.split_steps),
and most MATH solutions are a single paragraph, so a whole solution is often one
"step". Splitting at sentence ends would be a later option; it is not done here.

This module must not import torch, ray or mlflow, and imports `datasets` only
when the hub is actually used.
"""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

from orchestrator.tasks.base import DEFAULT_PROMPT_TEMPLATE, Problem
from orchestrator.tasks.grading import last_boxed
from orchestrator.tasks.jsonl import hub_records, require_str, split_file_records, split_limits

HF_DATASET = "EleutherAI/hendrycks_math"
SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
            "number_theory", "prealgebra", "precalculus")
LEVELS = (1, 2, 3, 4, 5)
SPLITS = ("train", "test")


def subject_key(subject: str) -> str:
    """"Counting & Probability" -> "counting_and_probability" (the hub config name)."""
    return re.sub(r"[^a-z]+", "_", subject.lower().replace("&", "and")).strip("_")


class MathTask:
    """MATH train/test problems, optionally filtered; see the module docstring."""

    name = "math"

    def __init__(self, path: str | Path | None = None, n_train: int | None = None,
                 n_test: int | None = None, levels: tuple[int, ...] | None = None,
                 subjects: tuple[str, ...] | None = None,
                 prompt_template: str = DEFAULT_PROMPT_TEMPLATE):
        self.limits = split_limits("math", n_train, n_test)
        self.path = Path(path) if path else None
        self.levels = _check_levels(levels)
        self.subjects = _check_subjects(subjects)
        self.prompt_template = prompt_template
        self._splits: dict[str, list[Problem]] = {}

    def split(self, name: str) -> list[Problem]:
        """The first `n_train`/`n_test` problems of split `name` that pass the
        level and subject filters, in file order."""
        if name not in SPLITS:
            raise ValueError(f"math: unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name not in self._splits:
            kept = (self._problem(name, index, where, record)
                    for index, (where, record) in enumerate(self._records(name))
                    if self._keep(where, record))
            self._splits[name] = list(islice(kept, self.limits[name]))
        return list(self._splits[name])

    def _keep(self, where: str, record: dict) -> bool:
        if self.levels is not None and _level(record, where) not in self.levels:
            return False
        return self.subjects is None or subject_key(require_str(record, "type", where)) in self.subjects

    def _records(self, split: str):
        if self.path is None:
            return _hub_records(split)
        return split_file_records("math", self.path, split, "fields problem, solution, level, type")

    @staticmethod
    def _problem(split: str, index: int, where: str, record: dict) -> Problem:
        question = require_str(record, "problem", where)
        solution = require_str(record, "solution", where)
        answer = last_boxed(solution)
        if answer is None or not answer.strip():
            raise ValueError(f'{where}: field "solution": no \\boxed{{...}} final answer, '
                             f"found {solution[-40:]!r}")
        return Problem(id=f"math-{split}-{index:05d}", question=question, solution=solution,
                       answer=answer.strip())


def _level(record: dict, where: str) -> int | None:
    """3 from "Level 3" or 3; None for the release's few "Level ?" items."""
    if "level" not in record:
        raise ValueError(f'{where}: missing field "level"')
    value = record["level"]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = re.fullmatch(r"(?:Level\s*)?(\d+|\?)", str(value).strip())
    if match is None:
        raise ValueError(f'{where}: field "level": expected "Level N" or N, got {value!r}')
    return int(match.group(1)) if match.group(1) != "?" else None


def _check_levels(levels: tuple[int, ...] | None) -> frozenset[int] | None:
    if not levels:
        return None
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise ValueError(f"math: levels {unknown} not in {list(LEVELS)}")
    return frozenset(levels)


def _check_subjects(subjects: tuple[str, ...] | None) -> frozenset[str] | None:
    if not subjects:
        return None
    keys = {subject_key(s) for s in subjects}
    unknown = sorted(keys - set(SUBJECTS))
    if unknown:
        raise ValueError(f"math: unknown subjects {unknown}; expected some of {', '.join(SUBJECTS)}")
    return frozenset(keys)


def _hub_records(split: str):
    """(location, record) pairs of every subject of `EleutherAI/hendrycks_math`."""
    advice = ("pass a local folder with train.jsonl and test.jsonl "
              "(task.path / MathTask(path=...))")
    for subject in SUBJECTS:
        yield from hub_records("math", HF_DATASET, subject, split, advice)
