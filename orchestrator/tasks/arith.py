"""`arith`: procedural multi-step word problems in GSM8K's exact format.

The embedded default benchmark: no dataset hub is reachable from CI, so the
task is generated, deterministically from a seed, with difficulty knobs
(number of steps, operand and value ranges, operations). Each problem is a
short story whose quantity changes step by step; its reference solution has one
equation per line and ends in `#### N`, exactly like GSM8K:

    Question: Mia has 7 shells. She finds 5 more. She gives away 3.
              How many shells does Mia have now?
    Answer:   She finds 5 more: 7 + 5 = 12
              She gives away 3: 12 - 3 = 9
              #### 9

`solve` is the task's exact solver: the `oracle` teacher writes the synthetic
pool with it. Train and test splits are disjoint by question text.

A problem has more than one correct solution text (`STYLES`, drawn per problem
from `task.teacher_styles`): bare equations, two steps on one line, additive
steps in another order. By default every solution is `solve`'s one text, as before.
`first_wrong_line` (arith_oracle.py) accepts every such path.

This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

from orchestrator.tasks.arith_oracle import first_wrong_line  # noqa: F401 - the oracle, re-exported
from orchestrator.tasks.base import DEFAULT_PROMPT_TEMPLATE, Problem

NAMES = (
    "Mia", "Tom", "Ava", "Leo", "Zoe", "Sam", "Ivy", "Max", "Eva", "Ben",
    "Lily", "Jack", "Ella", "Noah", "Ruby", "Owen", "Nina", "Finn", "Cleo", "Hugo",
)
OBJECTS = (
    "apples", "shells", "coins", "books", "stickers", "marbles", "cards", "pens",
    "stamps", "cookies", "beads", "rocks", "toys", "eggs", "shirts", "plums",
)
# (pronoun, object pronoun, possessive) by name; a fixed map keeps the
# generator deterministic without extra random draws.
PRONOUNS = {name: ("She", "her") if i % 2 == 0 else ("He", "him") for i, name in enumerate(NAMES)}

# Phrasings per operation. Several per operation so the model has to read the
# verb, not memorise one template; `{b}` is the operand.
PHRASES = {
    "+": ("{pro} buys {b} more.", "{pro} finds {b} more.", "A friend gives {obj_pro} {b} more.",
          "{pro} gets {b} more."),
    "-": ("{pro} gives away {b}.", "{pro} loses {b}.", "{pro} sells {b}.", "{pro} uses {b}."),
    "*": ("Then the number of {things} is multiplied by {b}.", "{pro} ends up with {b} times as many."),
}
OPS = ("+", "-", "*")
# The teacher's solution styles (task.teacher_styles); each is a path the oracle accepts.
# restated: each step on its line after the sentence it comes from (`solve`'s default);
# bare: the equation alone, as in the pre-training corpus's chains; fused: one line holds
# two consecutive steps (`7 + 5 - 3 = 9`); reordered: the steps of an additive run in
# another valid order; mixed: each of these choices drawn at random, line by line.
STYLES = ("restated", "bare", "fused", "reordered", "mixed")
TEST_EVERY = 8    # about one question in 8 belongs to the test split


def split_of(question: str) -> str:
    """The split a question belongs to, fixed by its text alone."""
    digest = hashlib.sha1(question.encode()).digest()
    return "test" if digest[0] % TEST_EVERY == 0 else "train"


@dataclass(frozen=True)
class ArithSpec:
    """Difficulty knobs of the generator (mirrored by `TaskConfig`)."""

    min_steps: int = 2
    max_steps: int = 3
    max_operand: int = 9
    max_value: int = 30
    ops: tuple[str, ...] = ("+", "-")
    max_multiplier: int = 3
    calculator_annotations: bool = False
    restate_sentences: bool = True
    teacher_styles: tuple[str, ...] = ()    # empty: `solve`'s one text per problem


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    return a * b


def _choose_step(rng: random.Random, value: int, spec: ArithSpec) -> tuple[str, int]:
    """Pick an operation and operand that keep the value in [0, max_value]."""
    candidates = []
    for op in spec.ops:
        if op == "+" and value + 1 <= spec.max_value:
            candidates.append((op, 1, min(spec.max_operand, spec.max_value - value)))
        elif op == "-" and value >= 1:
            candidates.append((op, 1, min(spec.max_operand, value)))
        elif op == "*" and 2 * value <= spec.max_value and value > 0:
            candidates.append((op, 2, min(spec.max_multiplier, spec.max_value // value)))
    if not candidates:  # only reachable with ops=("-",) and value 0
        raise ValueError(f"arith: no operation in {spec.ops} keeps the value in range from {value}")
    op, lo, hi = rng.choice(candidates)
    return op, rng.randint(lo, hi)


def _equation(op: str, a: int, b: int, result: int, annotate: bool) -> str:
    sign = {"+": "+", "-": "-", "*": "*"}[op]
    if annotate:  # GSM8K's calculator annotation, e.g. "7 + 5 = <<7+5=12>>12"
        return f"{a} {sign} {b} = <<{a}{sign}{b}={result}>>{result}"
    return f"{a} {sign} {b} = {result}"


class Step(NamedTuple):
    op: str
    operand: int
    sentence: str = ""      # the question's sentence this step comes from


def generate_problem(rng: random.Random, spec: ArithSpec) -> tuple[str, list[Step], int]:
    """Draw one story: the question text, its steps and the start value."""
    name = rng.choice(NAMES)
    things = rng.choice(OBJECTS)
    pro, obj_pro = PRONOUNS[name]
    start = rng.randint(1, spec.max_operand)
    sentences = [f"{name} has {start} {things}."]
    steps: list[Step] = []
    value = start
    for _ in range(rng.randint(spec.min_steps, spec.max_steps)):
        op, b = _choose_step(rng, value, spec)
        phrase = rng.choice(PHRASES[op])
        sentences.append(phrase.format(pro=pro, obj_pro=obj_pro, b=b, things=things))
        steps.append(Step(op, b, sentences[-1]))
        value = _apply(op, value, b)
    sentences.append(f"How many {things} does {name} have now?")
    return " ".join(sentences), steps, start


def solve(start: int, steps: list[Step], annotate: bool = False,
          restate: bool = True) -> tuple[str, int]:
    """The exact solver: the reference solution text and the final answer.

    With `restate`, each step first repeats the sentence it comes from, as
    GSM8K's solutions do ("Natalia sold 48/2 = 24 clips in May"):
    `She finds 5 more: 7 + 5 = 12`. The equation's operand then sits right
    after a phrase the model has just copied from the question, which a small
    model learns far sooner than counting sentences to find it.
    """
    lines = []
    value = start
    for step in steps:
        result = _apply(step.op, value, step.operand)
        equation = _equation(step.op, value, step.operand, result, annotate)
        lines.append(f"{step.sentence.rstrip('.')}: {equation}" if restate and step.sentence
                     else equation)
        value = result
    lines.append(f"#### {value}")
    return "\n".join(lines), value


class ArithTask:
    """Procedural GSM8K-format problems; see the module docstring."""

    name = "arith"

    def __init__(self, seed: int = 0, n_train: int = 20000, n_test: int = 500,
                 spec: ArithSpec | None = None, prompt_template: str = DEFAULT_PROMPT_TEMPLATE):
        self.seed = seed
        self.n_train = n_train
        self.n_test = n_test
        self.spec = spec or ArithSpec()
        self.prompt_template = prompt_template
        self._splits: dict[str, list[Problem]] | None = None

    def split(self, name: str) -> list[Problem]:
        if name not in ("train", "test"):
            raise ValueError(f"arith: unknown split {name!r} (expected 'train' or 'test')")
        if self._splits is None:
            self._splits = self._generate()
        return self._splits[name]

    def _stream(self, stream: str) -> Iterator[tuple[str, str, int]]:
        """Endless (question, solution, answer) draws from one seeded stream."""
        rng = random.Random(f"arith/{self.seed}/{stream}")
        # Styles come from a stream of their own: the problems stay those of the default.
        styles = random.Random(f"arith/{self.seed}/{stream}/styles")
        while True:
            question, steps, start = generate_problem(rng, self.spec)
            if self.spec.teacher_styles:
                style = styles.choice(self.spec.teacher_styles)
                solution, answer = write_solution(start, steps, style, styles, self.spec)
            else:
                solution, answer = solve(start, steps, self.spec.calculator_annotations,
                                         self.spec.restate_sentences)
            yield question, solution, answer

    def _generate(self) -> dict[str, list[Problem]]:
        # One stream, split by a hash of the question text: the splits are
        # disjoint, and each is a prefix-stable list whatever the other's size,
        # so changing n_test never changes the training data (or cache keys).
        splits: dict[str, list[Problem]] = {"train": [], "test": []}
        wanted = {"train": self.n_train, "test": self.n_test}
        seen: set[str] = set()
        limit = TEST_EVERY * (self.n_train + self.n_test) * 20 + 1000
        for draws, (question, solution, answer) in enumerate(self._stream("problems")):
            if all(len(splits[k]) >= wanted[k] for k in splits) or draws > limit:
                break
            split = split_of(question)
            if question in seen or len(splits[split]) >= wanted[split]:
                continue
            seen.add(question)
            problem_id = f"arith-{split}-{len(splits[split]):06d}"
            splits[split].append(Problem(problem_id, question, solution, str(answer)))
        for name, problems in splits.items():
            if len(problems) < wanted[name]:
                raise ValueError(
                    f"arith: could only draw {len(problems)} distinct {name} problems of "
                    f"{wanted[name]}; widen task.max_operand/max_value/max_steps or lower "
                    f"task.n_train/n_test")
        return splits

    def pretraining_corpus(self, count: int) -> list[str]:
        """Documents for the tiny base model's "pre-training": equation chains
        (arithmetic, in the solution format) and unlabelled training-partition
        questions (the language), alternating, from their own streams. No
        document pairs a question with its solution, so reading a question
        into equations is what the synthetic data must teach."""
        chains = random.Random(f"arith/{self.seed}/pretrain-chains")
        questions = (q for q, _, _ in self._stream("pretrain-questions") if split_of(q) == "train")
        docs = []
        for i in range(count):
            if i % 2 == 0:
                start = chains.randint(1, self.spec.max_operand)
                steps, value = [], start
                for _ in range(chains.randint(1, self.spec.max_steps)):
                    op, b = _choose_step(chains, value, self.spec)
                    steps.append(Step(op, b))
                    value = _apply(op, value, b)
                docs.append(solve(start, steps, self.spec.calculator_annotations)[0])
            else:
                docs.append(next(questions))
        return docs


# ---------------------------------------------------------------- solution styles
# A solution is a list of lines, each one step or two fused steps, restated or bare.
Line = tuple[tuple[Step, ...], bool]


def fusable(first: Step, second: Step) -> bool:
    """Whether `a op1 b op2 c` read left to right is what standard precedence reads:
    both steps additive, or the `*` first (`7 + 5 * 2` would be 17, not 24)."""
    return first.op == "*" or second.op != "*"


def additive_runs(steps: list[Step]) -> list[tuple[int, int]]:
    """(start, end) of each maximal run of consecutive + / - steps: the steps that may
    change places (a `*` keeps its position, it does not commute with them)."""
    runs, begin = [], None
    for i, step in enumerate([*steps, Step("*", 1)]):
        if step.op in "+-" and begin is None:
            begin = i
        elif step.op == "*" and begin is not None:
            runs.append((begin, i))
            begin = None
    return runs


def _in_bounds(start: int, steps: list[Step], max_value: int) -> bool:
    value = start
    for step in steps:
        value = _apply(step.op, value, step.operand)
        if not 0 <= value <= max_value:
            return False
    return True


def reorder(rng: random.Random, start: int, steps: list[Step], max_value: int) -> list[Step]:
    """The steps with each additive run in another order whose values stay in
    [0, max_value], where a few shuffles find one; a run without one keeps its order."""
    steps = list(steps)
    for begin, end in additive_runs(steps):
        for _ in range(20):
            run = steps[begin:end]
            rng.shuffle(run)
            shuffled = steps[:begin] + run + steps[end:]
            changed = [s[:2] for s in run] != [s[:2] for s in steps[begin:end]]
            if changed and _in_bounds(start, shuffled, max_value):
                steps = shuffled
                break
    return steps


def _fuse_one(rng: random.Random, steps: list[Step], restate: list[bool]) -> list[Line]:
    """One line per step, except one random fusable pair on one bare line."""
    pairs = [i for i in range(len(steps) - 1) if fusable(steps[i], steps[i + 1])]
    fused = rng.choice(pairs) if pairs else -1
    lines: list[Line] = []
    i = 0
    while i < len(steps):
        if i == fused:
            lines.append(((steps[i], steps[i + 1]), False))
            i += 2
        else:
            lines.append(((steps[i],), restate[i]))
            i += 1
    return lines


def _plan_lines(start: int, steps: list[Step], style: str, rng: random.Random,
                spec: ArithSpec) -> list[Line]:
    if style in ("restated", "bare"):
        return [((step,), style == "restated") for step in steps]
    if style == "fused":
        return _fuse_one(rng, steps, [False] * len(steps))
    if style == "reordered":
        return [((step,), False) for step in reorder(rng, start, steps, spec.max_value)]
    if style != "mixed":
        raise ValueError(f"arith: unknown solution style {style!r} (expected one of {STYLES})")
    if rng.random() < 0.5:
        steps = reorder(rng, start, steps, spec.max_value)
    restate = [rng.random() < 0.5 for _ in steps]
    if rng.random() < 0.5:
        return _fuse_one(rng, steps, restate)
    return [((step,), r) for step, r in zip(steps, restate, strict=True)]


def _render(start: int, lines: list[Line], annotate: bool) -> tuple[str, int]:
    texts, value = [], start
    for group, restate in lines:
        if len(group) == 1:
            step = group[0]
            result = _apply(step.op, value, step.operand)
            text = _equation(step.op, value, step.operand, result, annotate)
            if restate and step.sentence:
                text = f"{step.sentence.rstrip('.')}: {text}"
        else:
            first, second = group
            result = _apply(second.op, _apply(first.op, value, first.operand), second.operand)
            chain = f"{value} {first.op} {first.operand} {second.op} {second.operand}"
            text = (f"{chain} = <<{chain.replace(' ', '')}={result}>>{result}" if annotate
                    else f"{chain} = {result}")
        texts.append(text)
        value = result
    texts.append(f"#### {value}")
    return "\n".join(texts), value


def write_solution(start: int, steps: list[Step], style: str, rng: random.Random,
                   spec: ArithSpec) -> tuple[str, int]:
    """A correct solution in `style` (one of STYLES) and the final answer; `rng` draws
    the style's choices (which pair to fuse, which order). `restated` is `solve`'s text."""
    return _render(start, _plan_lines(start, steps, style, rng, spec), spec.calculator_annotations)
