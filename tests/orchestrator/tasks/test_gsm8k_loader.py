"""GSM8K loading: local JSONL in GSM8K's format, limits, stable ids, errors
that name the line, and a clear message when the hub cannot be reached."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.tasks.base import split_steps
from orchestrator.tasks.grading import grade
from orchestrator.tasks.gsm8k import GSM8KTask, strip_calculator_annotations

GSM8K_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "gsm8k"
REPO_ROOT = Path(__file__).resolve().parents[3]

ITEMS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
               "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "A shop sells 1,200 pens a week. How many in 2 weeks?",
     "answer": "1200 * 2 = <<1200*2=2400>>2400\n#### 2,400"},
    {"question": "Tom has 5 apples and eats 2. How many are left?",
     "answer": "5 - 2 = <<5-2=3>>3\n#### 3"},
]


def _folder(tmp_path: Path, train: list[str], test: list[str] | None = None) -> Path:
    (tmp_path / "train.jsonl").write_text("\n".join(train) + "\n")
    (tmp_path / "test.jsonl").write_text("\n".join(test if test is not None else train) + "\n")
    return tmp_path


def test_local_problems(tmp_path):
    task = GSM8KTask(path=_folder(tmp_path, [json.dumps(x) for x in ITEMS]))
    train = task.split("train")
    assert task.name == "gsm8k" and "{question}" in task.prompt_template
    assert [p.id for p in train] == ["gsm8k-train-00000", "gsm8k-train-00001", "gsm8k-train-00002"]
    assert [p.answer for p in train] == ["72", "2400", "3"]
    assert train[0].question == ITEMS[0]["question"]
    assert train[0].solution == ITEMS[0]["answer"]
    assert split_steps(train[0].solution)[-1] == "#### 72"
    assert task.split("test")[1].id == "gsm8k-test-00001"


def test_limits_take_the_first_problems_and_keep_ids(tmp_path):
    folder = _folder(tmp_path, [json.dumps(x) for x in ITEMS])
    task = GSM8KTask(path=folder, n_train=2, n_test=1)
    assert [p.id for p in task.split("train")] == ["gsm8k-train-00000", "gsm8k-train-00001"]
    assert [p.answer for p in task.split("test")] == ["72"]
    assert GSM8KTask(path=folder, n_train=2).split("train") == GSM8KTask(path=folder).split("train")[:2]


def test_strip_calculator_annotations(tmp_path):
    task = GSM8KTask(path=_folder(tmp_path, [json.dumps(ITEMS[0])]), strip_calculator_annotations=True)
    solution = task.split("train")[0].solution
    assert solution == ("Natalia sold 48/2 = 24 clips in May.\n"
                        "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")
    assert strip_calculator_annotations("a <<1+1=2>>2 and <<2*3=6>>6") == "a 2 and 6"


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "q", "answer": "no marker"}', r'^train\.jsonl:2: field "answer": expected a solution ending in "#### N"'),
    ('{"question": "q"}', r'^train\.jsonl:2: missing field "answer"$'),
    ('{"answer": "#### 1"}', r'^train\.jsonl:2: missing field "question"$'),
    ('{"question": "q", "answer": "1 + 1 = 2\\n####"}', r"^train\.jsonl:2: field \"answer\""),
    ("not json", r"^train\.jsonl:2: invalid JSON"),
])
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    task = GSM8KTask(path=_folder(tmp_path, [json.dumps(ITEMS[0]), bad_line]))
    with pytest.raises(ValueError, match=message):
        task.split("train")


def test_limit_stops_before_a_later_bad_line(tmp_path):
    task = GSM8KTask(path=_folder(tmp_path, [json.dumps(ITEMS[0]), "not json"]), n_train=1)
    assert len(task.split("train")) == 1


def test_unknown_split_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        GSM8KTask(path=tmp_path).split("validation")
    with pytest.raises(FileNotFoundError, match="train.jsonl not found"):
        GSM8KTask(path=tmp_path / "nowhere").split("train")


def test_hub_fallback_offline_says_to_pass_a_path(tmp_path):
    # A real `datasets` call in a fresh interpreter, forced offline with an
    # empty cache, so the test is the same with or without network.
    code = ("from orchestrator.tasks.gsm8k import GSM8KTask\n"
            "try:\n    GSM8KTask().split('test')\n"
            "except RuntimeError as e:\n    print('ERROR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert "ERROR gsm8k: could not load openai/gsm8k (main)" in out.stdout, out.stderr[-2000:]
    assert "pass a local folder with train.jsonl and test.jsonl" in out.stdout


def test_real_gsm8k_files():
    if not (GSM8K_DIR / "train.jsonl").exists():
        pytest.skip(f"{GSM8K_DIR} not present (it lives outside the repository)")
    task = GSM8KTask(path=GSM8K_DIR, strip_calculator_annotations=True)
    train, test = task.split("train"), task.split("test")
    assert (len(train), len(test)) == (7473, 1319)
    assert train[0].answer == "72" and test[0].id == "gsm8k-test-00000"
    assert all("<<" not in p.solution for p in train)
    assert all(p.answer.lstrip("-").replace(".", "", 1).isdigit() for p in train + test)
    # The reference solution grades as correct against its own answer.
    assert all(grade(p.solution, p.answer).correct for p in test)
