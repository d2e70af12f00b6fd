"""Benchmarks: `make_task(source, n_train, n_test)` builds the configured one.

Each task supplies train/test problems in GSM8K's layout (see base.py);
grading lives in grading.py. Nothing here imports torch, ray or mlflow.
"""

from __future__ import annotations

from orchestrator.tasks.base import (
    TASK_NAMES,
    Problem,
    Task,
    TaskSource,
    format_prompt,
    split_steps,
)


def make_task(cfg: TaskSource, n_train: int, n_test: int) -> Task:
    """The task `cfg` names, reading the first n_train / n_test problems of its splits
    (0: none of that split)."""
    if cfg.name == "arith":
        from orchestrator.tasks.arith import ArithSpec, ArithTask

        spec = ArithSpec(min_steps=cfg.min_steps, max_steps=cfg.max_steps,
                         max_operand=cfg.max_operand, max_value=cfg.max_value, ops=tuple(cfg.ops),
                         calculator_annotations=cfg.calculator_annotations,
                         restate_sentences=cfg.restate_sentences,
                         teacher_styles=tuple(cfg.teacher_styles))
        return ArithTask(seed=cfg.seed, n_train=n_train, n_test=n_test, spec=spec,
                         prompt_template=cfg.prompt_template)
    if cfg.name == "gsm8k":
        from orchestrator.tasks.gsm8k import GSM8KTask

        return GSM8KTask(path=cfg.path or None, n_train=n_train, n_test=n_test,
                         strip_calculator_annotations=cfg.strip_calculator_annotations,
                         prompt_template=cfg.prompt_template)
    if cfg.name == "math":
        from orchestrator.tasks.competition_math import MathTask

        return MathTask(path=cfg.path or None, n_train=n_train, n_test=n_test,
                        levels=tuple(cfg.levels) or None, subjects=tuple(cfg.subjects) or None,
                        prompt_template=cfg.prompt_template)
    raise ValueError(f"unknown task {cfg.name!r}")


__all__ = ["TASK_NAMES", "Problem", "Task", "TaskSource", "format_prompt", "make_task",
           "split_steps"]
