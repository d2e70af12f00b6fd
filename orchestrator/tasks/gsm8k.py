"""`gsm8k`: Grade School Math 8K (Cobbe et al. 2021), the paper's first benchmark.

Problems come from a local folder holding `train.jsonl` and `test.jsonl` in
GSM8K's own format (one object per line: `question`, and `answer` = the
reference solution, one step per line, ending in `#### N`), or, when no folder
is given, from the Hugging Face hub (`openai/gsm8k`, config `main`).

`Problem.solution` is the reference solution (optionally without the
`<<48/2=24>>` calculator annotations); `Problem.answer` is the text after
`####` without thousands commas. Ids are the line's position in its split
(`gsm8k-train-00042`), so they do not change with `n_train`/`n_test`.

This module must not import torch, ray or mlflow, and imports `datasets` only
when the hub is actually used.
"""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

from orchestrator.tasks.base import DEFAULT_PROMPT_TEMPLATE, Problem
from orchestrator.tasks.jsonl import hub_records, require_str, split_file_records, split_limits

HF_DATASET = "openai/gsm8k"
HF_CONFIG = "main"
SPLITS = ("train", "test")

_CALCULATOR_RE = re.compile(r"<<[^<>\n]*>>")
_FINAL_ANSWER_RE = re.compile(r"####[ \t]*([^\n]*)")


def strip_calculator_annotations(solution: str) -> str:
    """Remove GSM8K's calculator calls: "48/2 = <<48/2=24>>24" -> "48/2 = 24"."""
    return _CALCULATOR_RE.sub("", solution)


class GSM8KTask:
    """GSM8K train/test problems; see the module docstring."""

    name = "gsm8k"

    def __init__(self, path: str | Path | None = None, n_train: int | None = None,
                 n_test: int | None = None, strip_calculator_annotations: bool = False,
                 prompt_template: str = DEFAULT_PROMPT_TEMPLATE):
        self.limits = split_limits("gsm8k", n_train, n_test)
        self.path = Path(path) if path else None
        self.strip_calculator_annotations = strip_calculator_annotations
        self.prompt_template = prompt_template
        self._splits: dict[str, list[Problem]] = {}

    def split(self, name: str) -> list[Problem]:
        """The first `n_train`/`n_test` problems of split `name`, in file order."""
        if name not in SPLITS:
            raise ValueError(f"gsm8k: unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        if name not in self._splits:
            records = islice(self._records(name), self.limits[name])
            self._splits[name] = [self._problem(name, index, where, record)
                                  for index, (where, record) in enumerate(records)]
        return list(self._splits[name])

    def _records(self, split: str):
        if self.path is None:
            return _hub_records(split)
        return split_file_records("gsm8k", self.path, split, "GSM8K's format: question, answer")

    def _problem(self, split: str, index: int, where: str, record: dict) -> Problem:
        question = require_str(record, "question", where)
        solution = require_str(record, "answer", where)
        markers = _FINAL_ANSWER_RE.findall(solution)
        answer = markers[-1].strip().replace(",", "") if markers else ""
        if not answer:
            raise ValueError(f'{where}: field "answer": expected a solution ending in "#### N", '
                             f"found {solution[-40:]!r}")
        if self.strip_calculator_annotations:
            solution = strip_calculator_annotations(solution)
        return Problem(id=f"gsm8k-{split}-{index:05d}", question=question, solution=solution,
                       answer=answer)


def _hub_records(split: str):
    """(location, record) pairs of `openai/gsm8k` from the Hugging Face hub."""
    advice = ("pass a local folder with train.jsonl and test.jsonl in GSM8K's format "
              "(task.path / GSM8KTask(path=...))")
    return hub_records("gsm8k", HF_DATASET, HF_CONFIG, split, advice)
