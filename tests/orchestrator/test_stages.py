"""Stage functions not covered elsewhere: the model teacher's answer filter,
pass@k, sft_human's data, and the sharing of stages between rows."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import orchestrator.backends
from orchestrator.backends.base import Completion
from orchestrator.config import TaskConfig, TeacherConfig, config_from_dict
from orchestrator.planning import expand_grid
from orchestrator.records import read_rows
from orchestrator.stages import human_data, teacher
from orchestrator.stages.evaluate import pass_at_k
from orchestrator.tasks import make_task

from ..conftest import SHARED_DATA


class EveryOtherProblemTeacher:
    """Solves problems whose index is even, on its last attempt only."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, request):
        n = request.n
        out = []
        for prompt in prompts:
            i = self.answers.index(next(a for a in self.answers if a[0] == prompt))
            right = i % 2 == 0
            out.append([Completion(f"#### {self.answers[i][1] if right and j == n - 1 else -1}", 3, True)
                        for j in range(n)])
        return out

    def close(self):
        pass


def test_model_teacher_keeps_only_verified_solutions_in_problem_order(tmp_path, monkeypatch):
    task_cfg = TaskConfig(n_train=40, n_test=1)
    task = make_task(task_cfg.source, n_train=40, n_test=0)
    answers = [(f"Question: {p.question}\nAnswer:\n", p.answer) for p in task.split("train")]
    monkeypatch.setattr(orchestrator.backends, "make_backend",
                        lambda *a, **k: EveryOtherProblemTeacher(answers))
    params = teacher.ModelTeacherParams(
        task_cfg.source, 40, TeacherConfig(kind="model", model="x", samples_per_problem=3,
                                           chat_template="off"), 10,
        config_from_dict({}).generation, config_from_dict({}).model.loading)
    result = teacher.run(params, {}, tmp_path)
    rows = read_rows(tmp_path / "data.jsonl")
    assert [r["problem_id"] for r in rows] == [p.id for p in task.split("train")[:20:2]]
    assert all(r["completion"] == f"#### {r['answer']}" for r in rows)
    assert result.pool_size == 10 and result.problems_tried == 19
    assert result.generated_tokens == 40 * 3 * 3      # the whole first chunk was generated
    assert result.pilot_accuracy == 10 / 19           # the pool filled inside the pilot chunk

    # the pilot (all 40 problems here) verifies half: 20 solutions cannot make a pool of 30
    too_many = dataclasses.replace(params, n_max=30)
    with pytest.raises(RuntimeError, match=r"pilot: 50.0% of the first 40 problems verified; .* "
                                           r"about 20 solutions, fewer than the pool of 30"):
        teacher.run(too_many, {}, tmp_path)
    picky = dataclasses.replace(params, n_max=21, teacher=dataclasses.replace(
        params.teacher, pilot_min_accuracy=0.6))
    with pytest.raises(RuntimeError, match="below teacher.pilot_min_accuracy 60.0%"):
        teacher.run(picky, {}, tmp_path)


def test_a_hub_teacher_gets_its_chat_template(tmp_path, monkeypatch):
    """A teacher whose tokenizer has a chat template sees each prompt wrapped in it; the pool
    keeps the student's plain prompt."""
    from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

    folder = tmp_path / "teacher"
    save_tiny_model(["Question: a\nAnswer:\n#### 1"] * 20, TinyLlamaSpec(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), seed=0, out_dir=folder)
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = "<|user|>{{ messages[0]['content'] }}<|assistant|>"
    tokenizer.save_pretrained(folder)

    task_cfg = TaskConfig(n_train=4, n_test=1)
    task = make_task(task_cfg.source, n_train=4, n_test=0)
    seen = []

    class Recorder(EveryOtherProblemTeacher):
        def generate(self, prompts, request):
            seen.extend(prompts)
            return [[Completion(f"#### {p.answer}", 2, True)] for p in task.split("train")]

    monkeypatch.setattr(orchestrator.backends, "make_backend", lambda *a, **k: Recorder([]))
    params = teacher.ModelTeacherParams(task_cfg.source, 4, TeacherConfig(
        kind="model", model=str(folder), samples_per_problem=1), 4,
        config_from_dict({}).generation, config_from_dict({}).model.loading)
    (tmp_path / "out").mkdir()
    teacher.run(params, {}, tmp_path / "out")
    plain = f"Question: {task.split('train')[0].question}\nAnswer:\n"
    assert seen[0] == f"<|user|>{plain}<|assistant|>"
    assert read_rows(tmp_path / "out" / "data.jsonl")[0]["prompt"] == plain
    off = dataclasses.replace(params, teacher=dataclasses.replace(params.teacher,
                                                                  chat_template="off"))
    seen.clear()
    (tmp_path / "out-off").mkdir()
    teacher.run(off, {}, tmp_path / "out-off")
    assert seen[0] == plain


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)    # 1 - C(3,2)/C(4,2)
    assert pass_at_k(5, 4, 2) == 1.0                         # fewer than k wrong ones


@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").exists(), reason="../shared/data/gsm8k is absent")
def test_human_data_is_the_benchmarks_own_solutions(tmp_path):
    cfg = TaskConfig(name="gsm8k", path=str(SHARED_DATA / "gsm8k"), n_train=7473, n_test=10)
    human_data.run(human_data.HumanDataParams(cfg.source, 50), {}, tmp_path)
    rows = read_rows(tmp_path / "data.jsonl")
    assert len(rows) == 50
    assert rows[0]["question"].startswith("Natalia sold clips")
    assert rows[0]["completion"].endswith("#### 72") and rows[0]["answer"] == "72"
    assert rows[0]["prompt"] == f"Question: {rows[0]['question']}\nAnswer:\n"


def test_rows_share_the_sft_model_and_the_samples():
    config = config_from_dict({"grid": {"data_types": ["sft_teacher", "rft_self", "dpo_negative",
                                                       "dpo_per_step"], "sizes": [10, 20], "seeds": [0, 1]},
                               "task": {"n_train": 100}})
    plan = expand_grid(config)
    count = {stage: sum(s.stage == stage for s in plan.specs) for stage in
             ("sft", "sample", "rollouts", "dpo", "evaluate")}
    cells = 2 * 2
    # one teacher-SFT model + one RFT model per cell; one sampling run per cell
    assert count == {"sft": 2 * cells, "sample": cells, "rollouts": cells, "dpo": 2 * cells,
                     "evaluate": 4 * cells}
    for cell in plan.cells:
        sft = [k for k in cell.chain if plan.get(k).stage == "sft"]
        assert plan.get(sft[0]).id == f"sft[n={cell.n},seed={cell.seed}]"


def test_sft_human_plans_on_a_benchmark_with_solutions():
    config = config_from_dict({"task": {"name": "gsm8k", "path": str(Path(__file__).parent),
                                        "n_train": 100},
                               "teacher": {"kind": "model", "model": "some/teacher"},
                               "grid": {"data_types": ["sft_teacher", "sft_human"], "sizes": [10]}})
    stages = [s.stage for s in expand_grid(config).specs]
    assert stages.count("human_data") == 1 and stages.count("sft") == 2
