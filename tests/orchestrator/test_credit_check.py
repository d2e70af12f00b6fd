"""`show CONFIG --stage rollouts` checks the Monte Carlo pits against the arith oracle's
first wrong line: on rollouts written as the stage writes them, for real task problems."""

from __future__ import annotations

import io

from orchestrator.config import config_from_dict
from orchestrator.contract import Files
from orchestrator.credit import step_advantages, step_values
from orchestrator.credit_check import pit_check
from orchestrator.records import write_rows
from orchestrator.show import show
from orchestrator.tasks import make_task
from orchestrator.tasks.base import split_steps


def _negative(problem, wrong_at: int, successes: list[list[bool]]) -> dict:
    steps = split_steps(problem.solution)
    head, _, result = steps[wrong_at - 1].rpartition(" ")
    steps[wrong_at - 1] = f"{head} {int(result) + 1}"
    values = step_values(successes, final_correct=False)
    return {"problem_id": problem.id, "sample_index": 0, "prompt": "Q\n", "answer": problem.answer,
            "steps": steps, "values": values, "advantages": step_advantages(values),
            "successes": successes, "continuations": [[] for _ in successes]}


def test_show_reports_pit_precision_and_recall_against_the_oracle(tmp_path):
    config = config_from_dict({"task": {"n_train": 60, "min_steps": 2, "max_steps": 2},
                               "grid": {"sizes": [50]},
                               "per_step": {"rollouts": 4}})
    problems = make_task(config.task.source, 60, 0).split("train")[:2]
    rows = [  # two steps and the answer line: prefixes after 0, 1 and 2 lines are rolled out
        _negative(problems[0], 2, [[True] * 4, [False, False, True, False], [False] * 4]),
        _negative(problems[1], 1, [[True, True, False, False], [False] * 4, [False] * 4]),
    ]       # the first found at k = 4 only (early at k = 1 and 2), the second at every k
    write_rows(tmp_path / Files.ROLLOUTS, rows)
    table = {r["k"]: r for r in pit_check(config, rows)}
    assert sorted(table) == [1, 2, 4]
    assert table[4]["precision"] == 1.0 and table[4]["recall"] == 1.0
    assert table[1]["precision"] == 0.5 and table[1]["early"] == 0.5
    out = io.StringIO()
    show(tmp_path, 1, out, config=config)
    text = out.getvalue()
    assert "pit (first_zero) vs the task's first wrong line" in text
    assert "    4     2      1.00   1.00  0.00  0.00" in text, text


def test_no_oracle_no_table():
    config = config_from_dict({"task": {"name": "gsm8k"}, "teacher": {"kind": "model",
                                                                      "model": "x"}})
    assert pit_check(config, [{"problem_id": "p", "steps": ["a"], "successes": [[True]]}]) is None
