"""The benchmark interface every task implements, and the step convention.

A task supplies problems (question, reference solution, final answer) for a
train and a test split, and a prompt format. Solutions follow GSM8K's layout:
one reasoning step per line, the final answer last (`#### N` for GSM8K-style
tasks, `\\boxed{...}` for MATH). Per-step stages rely on that layout, so the
split into steps lives here, once.

This module must not import torch, ray or mlflow: tasks are loaded everywhere,
including in the planner.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

from orchestrator.contract import KEY_NEUTRAL

# The prompt every task uses unless its config names another. It ends with a
# newline so that the first generated token starts the first step.
DEFAULT_PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"

# The benchmarks `make_task` builds (and `task.name` accepts).
TASK_NAMES = ("arith", "gsm8k", "math")


@dataclass(frozen=True)
class TaskSource:
    """Which problems a task has: `TaskConfig` without the split sizes.

    Stages put this in their config slice and state how many problems of each
    split they read (`make_task(source, n_train, n_test)`); splits are
    prefix-stable, so reading fewer problems never changes the ones read.
    """

    name: str
    path: str
    prompt_template: str
    seed: int
    min_steps: int
    max_steps: int
    max_operand: int
    max_value: int
    ops: tuple[str, ...]
    calculator_annotations: bool
    restate_sentences: bool
    strip_calculator_annotations: bool
    levels: tuple[int, ...]
    subjects: tuple[str, ...]
    # Added after artifacts existed: at its default, () (solve's one text), it stays out of
    # the cache keys of every stage that reads the task.
    teacher_styles: tuple[str, ...] = field(default=(), metadata={KEY_NEUTRAL: True})

    def without_teacher_style(self) -> TaskSource:
        """The same problems with their default solution text: for the stages that do not
        read the teacher's style (the base model, made before any teacher writes;
        evaluation, which grades answers), so choosing a style does not redo them."""
        return replace(self, teacher_styles=())


@dataclass(frozen=True)
class Problem:
    """One benchmark item.

    `solution` is the reference solution text (steps one per line, final
    answer marker last); `answer` is the final answer alone ("72",
    "\\frac{1}{2}"), which is what grading compares against.
    """

    id: str
    question: str
    solution: str
    answer: str


class Task(Protocol):
    """What the stages need of a benchmark."""

    name: str
    prompt_template: str

    def split(self, name: str) -> list[Problem]:
        """The problems of split `name` ("train" or "test"), in a fixed order."""
        ...


def format_prompt(template: str, question: str) -> str:
    """The model input for one question."""
    return template.format(question=question)


def split_steps(solution: str) -> list[str]:
    """Split a solution into reasoning steps at line breaks (Self-Explore,
    Hwang et al. 2024). Blank lines are dropped; the final-answer line counts
    as the last step."""
    return [line for line in solution.split("\n") if line.strip()]


def join_steps(steps: list[str]) -> str:
    """Inverse of `split_steps` for non-blank steps."""
    return "\n".join(steps)
