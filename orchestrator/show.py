"""`python -m orchestrator show`: print a few examples of a stage artifact.

Every intermediate artifact is a JSONL (samples with grades, RFT data, pairs,
rollouts with per-step values and advantages, per-step pairs, predictions);
this renders a few records of one for a person, e.g. each step of a negative
with its Monte Carlo value V and advantage A and the step the pit rules pick.
An artifact is named by its folder or file, or by an experiment config and a
stage (`show experiments/demo.yaml --stage rollouts --n 1000 --seed 0`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from orchestrator.config import Config
from orchestrator.contract import Files
from orchestrator.credit import PIT_RULES, first_pit
from orchestrator.credit_check import pit_check, pit_check_text
from orchestrator.records import read_rows
from orchestrator.store import RESULT

# The artifact files `show` renders, in the order it looks for them in a folder.
FILES = (Files.ROLLOUTS, Files.PAIRS, Files.SAMPLES, Files.DATA, Files.PREDICTIONS)


def find_artifact(config: Config, config_path: str, stage: str, n: int | None,
                  seed: int | None, data_type: str | None) -> Path:
    """The folder of the first finished stage of `config`'s plan matching the filters."""
    from orchestrator.planning import expand_grid
    from orchestrator.store import open_store

    store = open_store(config.artifacts_root, config.cluster.artifact_cache)
    candidates = [s for s in expand_grid(config).specs if s.stage == stage
                  and (n is None or s.tag_dict.get("n") == str(n))
                  and (seed is None or s.tag_dict.get("seed") == str(seed))
                  and (data_type is None or s.tag_dict.get("data_type") == data_type)]
    if not candidates:
        raise ValueError(f"{config_path}: the plan has no {stage!r} stage matching the filters")
    for spec in candidates:
        if store.is_done(spec.stage, spec.key):
            return store.local_dir(spec.stage, spec.key, model=False)   # JSONL only
    raise ValueError(f"{candidates[0].id} has not run yet (run the sweep first)")


def artifact_file(path: Path) -> Path:
    if path.is_file():
        return path
    for name in FILES:
        if (path / name).exists():
            return path / name
    raise ValueError(f"{path}: no artifact JSONL here (looked for {', '.join(FILES)})")


def show(path: Path, count: int, stream: TextIO, problem: str | None = None,
         config: Config | None = None) -> None:
    """A few records of the artifact at `path`; with the experiment's `config`, a
    rollouts artifact's pits are also checked against the task's oracle."""
    file = artifact_file(path)
    result = file.parent / RESULT
    if result.exists():
        summary = {k: v for k, v in json.loads(result.read_text()).items() if k != "loss_curve"}
        stream.write(f"{file.parent.parent.name} result: {json.dumps(summary)}\n")
    every = read_rows(file)
    if config is not None and file.name == Files.ROLLOUTS:
        table = pit_check(config, every)
        if table:
            stream.write(pit_check_text(table, config.per_step.pit_rule) + "\n")
    rows = [r for r in every if problem is None or r.get("problem_id") == problem]
    stream.write(f"{file}: {len(rows)} records, showing {min(count, len(rows))}\n")
    render = RENDERERS.get(file.name, render_generic)
    for row in rows[:count]:
        stream.write("\n" + render(row) + "\n")


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.split("\n"))


def _question(prompt: str) -> str:
    return prompt.strip().split("\n")[0]


def render_rollouts(row: dict) -> str:
    pits = {rule: first_pit(row["values"], rule) for rule in PIT_RULES}
    lines = [f"{row['problem_id']} (answer {row['answer']}), negative sample #{row['sample_index']}",
             f"  {_question(row['prompt'])}",
             f"  {'step':<34} {'V after':>7} {'A':>6}",
             f"  {'(problem only)':<34} {row['values'][0]:>7.2f}"]
    for i, step in enumerate(row["steps"], start=1):
        if i >= len(row["values"]):     # per_step.early_stop: not rolled out past the pit
            lines.append(f"  {i}. {step[:31]:<31} {'-':>7} {'-':>6}  (after the pit)")
            continue
        marks = [f"<- {rule}" for rule, pit in pits.items() if pit == i]
        lines.append(f"  {i}. {step[:31]:<31} {row['values'][i]:>7.2f} {row['advantages'][i - 1]:>+6.2f}"
                     f"  {' '.join(marks)}")
    return "\n".join(lines)


def render_pair(row: dict) -> str:
    head = f"{row['problem_id']}"
    if "pit" in row:
        head += f": pit at step {row['pit']}, values {[round(v, 2) for v in row['values']]}, " \
                f"chosen from {row['chosen_source']}"
    return "\n".join([head, "  prompt:", _indent(row["prompt"].rstrip("\n")),
                      "  chosen:", _indent(row["chosen"]), "  rejected:", _indent(row["rejected"])])


def render_sample(row: dict) -> str:
    mark = "correct" if row["correct"] else "wrong"
    return (f"{row['problem_id']} #{row['sample_index']} ({mark}; answer {row['answer']}, "
            f"extracted {row['extracted']})\n" + _indent(row["completion"]))


def render_data(row: dict) -> str:
    source = f" [{row['source']}]" if "source" in row else ""
    return f"{row['problem_id']}{source}: {_question(row['prompt'])}\n" + _indent(row["completion"])


def render_prediction(row: dict) -> str:
    mark = "correct" if row["correct"] else "wrong"
    return (f"{row['problem_id']} ({mark}; answer {row['answer']}, extracted {row['extracted']})\n"
            + _indent(row["completion"]))


def render_generic(row: dict) -> str:
    return json.dumps(row, indent=2)[:2000]


RENDERERS = {Files.ROLLOUTS: render_rollouts, Files.PAIRS: render_pair,
             Files.SAMPLES: render_sample, Files.DATA: render_data,
             Files.PREDICTIONS: render_prediction}
