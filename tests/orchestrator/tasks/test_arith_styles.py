"""arith's solution styles: each a correct path the oracle accepts, drawn per problem from
task.teacher_styles, and the default still the one text it always was."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import Counter

import pytest

from orchestrator.config import TaskConfig
from orchestrator.planning.plan import key_data
from orchestrator.tasks import make_task
from orchestrator.tasks.arith import (
    STYLES,
    ArithSpec,
    ArithTask,
    Step,
    additive_runs,
    fusable,
    generate_problem,
    solve,
    write_solution,
)
from orchestrator.tasks.arith_oracle import equations, first_wrong, first_wrong_line
from orchestrator.tasks.base import split_steps

# Every operation and up to 4 steps, so that runs, multiplications and fusable pairs all occur.
WIDE = ArithSpec(min_steps=2, max_steps=4, ops=("+", "-", "*"))
SPECS = (ArithSpec(), WIDE, ArithSpec(max_steps=4, ops=("+", "-", "*"),
                                      calculator_annotations=True))


def problems(spec: ArithSpec, count: int, seed: int = 0):
    rng = random.Random(f"test/{seed}")
    return [(start, steps) for _, steps, start in (generate_problem(rng, spec) for _ in range(count))]


def path(steps: list[Step]) -> list[tuple[str, int]]:
    return [(s.op, s.operand) for s in steps]


def digest(task: ArithTask) -> str:
    rows = [[p.id, p.question, p.solution, p.answer] for s in ("train", "test") for p in task.split(s)]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def test_the_default_keeps_the_texts_it_had_before_styles():
    """Digests computed with arith.py as it was before solution styles (commit dff56cf):
    with task.teacher_styles empty every problem and solution, hence every artifact and
    result of experiments/*.yaml, must stay what it was."""
    assert digest(ArithTask(seed=0, n_train=50, n_test=10)) == (
        "87b3715eea159af9da458f9b7f0376e974c1aa898092a7a0e51dec13d354ae20")
    assert digest(ArithTask(seed=0, n_train=50, n_test=10, spec=ArithSpec(
        ops=("+", "-", "*"), calculator_annotations=True))) == (
        "d6d7f50d78cbfaf6d17a280c4d76f1fc60607daf2dde4416191e13bee918fc02")
    assert digest(ArithTask(seed=0, n_train=50, n_test=10, spec=ArithSpec(
        restate_sentences=False))) == (
        "8d525f57d3b2831d2525ac1c5fe57375e3c823d3ee5999b9e248e1c15eb6ebef")
    corpus = ArithTask(seed=0, n_train=50, n_test=10).pretraining_corpus(40)
    assert hashlib.sha256(json.dumps(corpus).encode()).hexdigest() == (
        "6f20fb21de76f073e90bfa18949669b2e26f6101a9901594119cbce49e73a00d")


def test_the_style_knob_stays_out_of_cache_keys_at_its_default():
    default = TaskConfig().source
    assert "teacher_styles" not in key_data(default)
    styled = TaskConfig(teacher_styles=("restated", "bare")).source
    assert key_data(styled)["teacher_styles"] == ["restated", "bare"]


def test_a_teacher_style_redoes_what_reads_it_and_not_the_base_model_or_the_grading():
    """The base model (tokenizer and pre-training made before any teacher writes) and the
    evaluation (it grades answers) read the task without the teacher's style: choosing one
    redoes the pool and what learns from it, not the ten-minute pre-training."""
    from orchestrator.config import load_config
    from orchestrator.planning import expand_grid

    from ...conftest import ROOT

    plans = [expand_grid(load_config(ROOT / "experiments" / "demo.yaml", overrides))
             for overrides in ([], ["task.teacher_styles=[restated,fused,reordered]"])]
    params = [{s.id: s.params for s in plan.specs} for plan in plans]
    keys = [{s.id: s.key for s in plan.specs} for plan in plans]
    assert keys[0]["base_model[tiny]"] == keys[1]["base_model[tiny]"]
    evaluation = next(i for i in params[0] if i.startswith("evaluate[sft_teacher,"))
    assert params[0][evaluation] == params[1][evaluation]
    pool = next(i for i in keys[0] if i.startswith("teacher_generate["))
    assert keys[0][pool] != keys[1][pool]


@pytest.mark.parametrize("spec", SPECS, ids=["default", "wide", "annotated"])
@pytest.mark.parametrize("style", STYLES)
def test_every_style_is_a_path_the_oracle_accepts(spec, style):
    rng = random.Random(style)
    for start, steps in problems(spec, 300):
        text, answer = write_solution(start, steps, style, rng, spec)
        assert answer == solve(start, steps)[1]
        assert text.endswith(f"#### {answer}")
        assert first_wrong(start, path(steps), split_steps(text)) is None, text
        assert first_wrong_line(text, split_steps(text)) is None, text   # itself as reference
        assert first_wrong_line(solve(start, steps)[0], split_steps(text)) is None, text


@pytest.mark.parametrize("style", STYLES)
def test_changing_any_result_of_a_styled_solution_is_caught_at_that_line(style):
    rng = random.Random(style)
    for start, steps in problems(WIDE, 200, seed=1):
        lines = split_steps(write_solution(start, steps, style, rng, WIDE)[0])
        for i in range(len(lines) - 1):
            head, _, result = lines[i].rpartition(" ")
            broken = lines[:i] + [f"{head} {int(result) + 1}"] + lines[i + 1:]
            assert first_wrong(start, path(steps), broken) == i + 1, broken


def test_each_style_looks_like_its_name():
    rng = random.Random(0)
    for start, steps in problems(WIDE, 300):
        def lines(style, start=start, steps=steps):
            return split_steps(write_solution(start, steps, style, rng, WIDE)[0])[:-1]

        assert "\n".join(lines("restated")) == solve(start, steps)[0].rsplit("\n", 1)[0]
        assert lines("bare") == split_steps(solve(start, steps, restate=False)[0])[:-1]
        can_fuse = any(fusable(a, b) for a, b in itertools.pairwise(steps))
        fused = [len(equations(line)[0].operations) for line in lines("fused")]
        assert fused.count(2) == (1 if can_fuse else 0) and len(fused) == len(steps) - can_fuse
        reordered = [(eq.operations[0]) for line in lines("reordered") for eq in equations(line)]
        assert sorted(reordered) == sorted(path(steps))
        assert [op for op in reordered if op[0] == "*"] == [op for op in path(steps) if op[0] == "*"]


def test_reordered_changes_the_order_where_a_valid_one_exists():
    rng = random.Random(1)
    changed = possible = 0
    for start, steps in problems(WIDE, 300):
        runs = [r for r in additive_runs(steps) if len(set(steps[r[0]:r[1]])) > 1]
        if not runs:
            continue
        possible += 1
        text = write_solution(start, steps, "reordered", rng, WIDE)[0]
        changed += text != solve(start, steps, restate=False)[0]
    assert possible > 100 and changed / possible > 0.8


def test_the_oracle_accepts_exactly_the_orders_that_stay_non_negative():
    """Every order of each additive run, written bare, against the oracle: right iff no
    value goes below zero; a `*` moved out of its place is always wrong."""
    for start, steps in problems(WIDE, 150, seed=2):
        (begin, end), *_ = additive_runs(steps) or [(0, 0)]
        for run in set(itertools.permutations(steps[begin:end])):
            order = steps[:begin] + list(run) + steps[end:]
            values = list(itertools.accumulate(
                order, lambda v, s: v + s.operand if s.op == "+" else
                v - s.operand if s.op == "-" else v * s.operand, initial=start))
            text = solve(start, order, restate=False)[0]
            expected = None if min(values) >= 0 else 1 + next(
                i for i, v in enumerate(values[1:]) if v < 0)
            assert first_wrong(start, path(steps), split_steps(text)) == expected, text


def test_a_teacher_style_mix_gives_its_shares_deterministically():
    spec = ArithSpec(teacher_styles=("restated", "restated", "bare", "fused"))
    task = ArithTask(seed=0, n_train=1000, n_test=0, spec=spec)
    default = ArithTask(seed=0, n_train=1000, n_test=0)
    shares = Counter()
    for problem, plain in zip(task.split("train"), default.split("train"), strict=True):
        assert problem.question == plain.question and problem.answer == plain.answer
        lines = split_steps(problem.solution)[:-1]
        if any(len(eq.operations) == 2 for line in lines for eq in equations(line)):
            shares["fused"] += 1
        elif ":" in problem.solution:
            assert problem.solution == plain.solution
            shares["restated"] += 1
        else:
            shares["bare"] += 1
        assert first_wrong_line(plain.solution, split_steps(problem.solution)) is None
    assert abs(shares["restated"] / 1000 - 0.5) < 0.05
    assert abs(shares["bare"] / 1000 - 0.25) < 0.05
    assert abs(shares["fused"] / 1000 - 0.25) < 0.05
    again = ArithTask(seed=0, n_train=1000, n_test=0, spec=spec)
    assert [p.solution for p in again.split("train")] == [p.solution for p in task.split("train")]


def test_make_task_passes_the_knob_and_the_config_names_a_bad_style():
    from orchestrator.config import ConfigError, load_config

    source = TaskConfig(teacher_styles=("mixed",)).source
    task = make_task(source, n_train=40, n_test=0)
    assert task.spec.teacher_styles == ("mixed",)
    assert [p.solution for p in task.split("train")] != [
        p.solution for p in make_task(TaskConfig().source, 40, 0).split("train")]
    with pytest.raises(ConfigError, match=r"task\.teacher_styles\[1\]: expected one of"):
        load_config("experiments/smoke.yaml", ["task.teacher_styles=[bare,pretty]"])
