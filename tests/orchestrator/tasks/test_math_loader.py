"""MATH loading from local JSONL: boxed answers, level/subject filters,
stable ids, line-naming errors, and the offline hub message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tasks.base import split_steps
from orchestrator.tasks.competition_math import MathTask, subject_key
from orchestrator.tasks.grading import grade

REPO_ROOT = Path(__file__).resolve().parents[3]

# Written for this test in the release's style (one paragraph, answer boxed).
ITEMS = [
    {"problem": "What is the value of $\\frac{1}{2} + \\frac{1}{4}$?",
     "solution": "We have $\\frac{1}{2} + \\frac{1}{4} = \\frac{2}{4} + \\frac{1}{4} = "
                 "\\boxed{\\frac{3}{4}}$.",
     "level": "Level 1", "type": "Prealgebra"},
    {"problem": "How many ways can 3 people sit in a row of 3 chairs?",
     "solution": "The first seat has 3 choices, the second 2, the last 1, so there are "
                 "$3 \\cdot 2 \\cdot 1 = \\boxed{6}$ ways.",
     "level": "Level 2", "type": "Counting & Probability"},
    {"problem": "Solve $x^2 - 5x + 6 = 0$ for the larger root.",
     "solution": "Factor: $(x-2)(x-3) = 0$.\nThe roots are $2$ and $3$, so the larger root is "
                 "$\\boxed{3}$.",
     "level": "Level 3", "type": "Algebra"},
    {"problem": "Find the area of a square with side $\\sqrt{2}$.",
     "solution": "The area is $(\\sqrt{2})^2 = \\fbox{2}$.",
     "level": "Level ?", "type": "Geometry"},
]


def _folder(tmp_path: Path, items: list, test: list | None = None) -> Path:
    def lines(rows):
        return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"
    (tmp_path / "train.jsonl").write_text(lines(items))
    (tmp_path / "test.jsonl").write_text(lines(test if test is not None else items))
    return tmp_path


def test_local_problems(tmp_path):
    task = MathTask(path=_folder(tmp_path, ITEMS))
    problems = task.split("test")
    assert task.name == "math"
    assert [p.id for p in problems] == [f"math-test-{i:05d}" for i in range(4)]
    assert [p.answer for p in problems] == ["\\frac{3}{4}", "6", "3", "2"]
    assert problems[0].question == ITEMS[0]["problem"]
    assert problems[2].solution == ITEMS[2]["solution"]


def test_one_paragraph_solution_is_one_step(tmp_path):
    # The documented caveat: steps split at line breaks only.
    problems = MathTask(path=_folder(tmp_path, ITEMS)).split("train")
    assert len(split_steps(problems[0].solution)) == 1
    assert len(split_steps(problems[2].solution)) == 2


def test_filters_keep_ids_of_the_unfiltered_split(tmp_path):
    folder = _folder(tmp_path, ITEMS)
    by_level = MathTask(path=folder, levels=(2, 3)).split("train")
    assert [p.id for p in by_level] == ["math-train-00001", "math-train-00002"]
    by_subject = MathTask(path=folder, subjects=("counting_and_probability", "Geometry")).split("train")
    assert [p.answer for p in by_subject] == ["6", "2"]
    both = MathTask(path=folder, levels=(1, 2, 3), subjects=("algebra",)).split("train")
    assert [p.id for p in both] == ["math-train-00002"]
    limited = MathTask(path=folder, levels=(1, 2, 3), n_train=2).split("train")
    assert [p.answer for p in limited] == ["\\frac{3}{4}", "6"]


def test_references_grade_their_own_answers(tmp_path):
    for p in MathTask(path=_folder(tmp_path, ITEMS)).split("test"):
        assert grade(p.solution, p.answer, task="math").correct, p.id


def test_subject_key():
    assert subject_key("Counting & Probability") == "counting_and_probability"
    assert subject_key("Intermediate Algebra") == "intermediate_algebra"


def test_bad_filters_are_rejected():
    with pytest.raises(ValueError, match=r"levels \[6\]"):
        MathTask(levels=(6,))
    with pytest.raises(ValueError, match=r"unknown subjects \['calculus'\]"):
        MathTask(subjects=("Calculus",))


@pytest.mark.parametrize("bad, message", [
    ({"problem": "p", "solution": "no box here", "level": "Level 1", "type": "Algebra"},
     r'^test\.jsonl:2: field "solution": no \\boxed'),
    ({"problem": "p", "solution": "\\boxed{1", "level": "Level 1", "type": "Algebra"},
     r'^test\.jsonl:2: field "solution"'),
    ({"solution": "\\boxed{1}", "level": "Level 1", "type": "Algebra"},
     r'^test\.jsonl:2: missing field "problem"$'),
    ("{broken", r"^test\.jsonl:2: invalid JSON"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad, message):
    task = MathTask(path=_folder(tmp_path, ITEMS, test=[ITEMS[0], bad]))
    with pytest.raises(ValueError, match=message):
        task.split("test")


def test_bad_level_names_the_line(tmp_path):
    bad = {**ITEMS[0], "level": "hard"}
    task = MathTask(path=_folder(tmp_path, ITEMS, test=[bad]), levels=(1,))
    with pytest.raises(ValueError, match=r'^test\.jsonl:1: field "level": expected "Level N"'):
        task.split("test")


def test_hub_fallback_offline_says_to_pass_a_path(tmp_path):
    code = ("from orchestrator.tasks.competition_math import MathTask\n"
            "try:\n    MathTask().split('test')\n"
            "except RuntimeError as e:\n    print('ERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert "ERROR math: could not load EleutherAI/hendrycks_math (algebra)" in out.stdout, \
        out.stderr[-2000:]
    assert "pass a local folder with train.jsonl and test.jsonl" in out.stdout
