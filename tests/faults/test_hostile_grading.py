"""Hostile model output into grading (issue 12): megabyte completions,
pathological LaTeX, enormous numbers, NUL bytes and invalid UTF-8, regex
backtracking bait and code. Every item is graded, or marked timed out, within
its deadline; the grading process neither hangs nor dies; nothing is executed.

Grading runs in a real child process (through `grade_batch`) and through the
`grade` CLI on a JSONL, each bounded by a wall-clock limit: a hang fails the
test instead of stalling the suite.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from ..conftest import ROOT, run_command

TIMEOUT_S = 2.0                 # the per-answer symbolic deadline under test
# An item past its deadline kills the math-verify helper; the next symbolic item pays
# for a fresh one (an interpreter importing sympy) before its own deadline starts.
RESTART_ALLOWANCE_S = 20.0
PER_ITEM_S = TIMEOUT_S + RESTART_ALLOWANCE_S
# Pure-Python work (extraction, exact numbers) on any item, however hostile.
IN_PROCESS_S = 0.5
WHOLE_RUN_S = 300
MB = 1 << 20
PWNED = "PWNED"                 # a file the code-shaped completions try to create


def hostile_items(marker_dir: Path) -> dict[str, tuple[str, str]]:
    """name -> (completion, reference)."""
    touch = f"__import__('os').system('touch {marker_dir / PWNED}')"
    return {
        "mb-digits": ("1" * MB, "5"),
        "mb-prose-answer-at-end": ("blah " * (MB // 5) + "#### 5", "5"),
        "mb-open-boxes": ("\\boxed{" * (MB // 7), "5"),
        "mb-nul": ("\x00" * MB + "#### 5", "5"),
        "mb-answer-is": ("the answer is " * (MB // 14) + "5", "5"),
        "mb-a-lines": ("A: " * (MB // 3), "5"),
        "mb-commas": ("1," * (MB // 2), "5"),
        "deep-boxed": ("\\boxed{" * 2000 + "1" + "}" * 2000, "1"),
        "boxed-in-boxed-latex": ("\\boxed{" * 31 + "x^2" + "}" * 31, "x^2"),
        "frac-tower-40": ("\\boxed{" + "\\frac{1}{" * 40 + "2" + "}" * 41, "\\frac{1}{2}"),
        "frac-tower-55": ("\\boxed{" + "\\frac{1}{" * 55 + "2" + "}" * 56, "\\frac{1}{2}"),
        "power-tower-plain": ("the answer is 10^10^10", "10^{10^{10}}"),
        "power-tower-braced": ("\\boxed{9^{9^{9^{9}}}}", "9^{9^{9}}"),
        "factorial-of-huge": ("\\boxed{(10^{10})!}", "1"),
        "sum-to-huge": ("\\boxed{\\sum_{n=1}^{10^{10}} n}", "1"),
        "integral-bait": ("\\boxed{\\int_0^{10^{100}} e^{x^2} dx}", "1"),
        "matrix-200": ("\\boxed{\\begin{pmatrix}" + "1&" * 200 + "1\\end{pmatrix}}", "1"),
        "int-4200-digits": ("#### " + "9" * 4200, "9" * 4200),
        "int-450-digits-power": ("\\boxed{" + "9" * 450 + "^{99}}", "1"),
        "decimal-4000-digits": ("#### 0." + "3" * 3990, "1/3"),
        "nul-in-answer": ("The answer is 5\x00\x00", "5"),
        "nul-in-box": ("\\boxed{\x00\\frac{1}{2}}", "\\frac{1}{2}"),
        "lone-surrogates": ("The answer is \udcff\udcfe 5", "5"),
        "surrogate-in-box": ("\\boxed{\udcff}", "\\frac{1}{2}"),
        "unit-regex-bait": ("the answer is 1 " + "a" * 19_000 + "!", "1"),
        "unit-regex-bait-words": ("the answer is 1 " + "ab " * 6000 + "!", "1"),
        "gsm8k-marker-bait": ("####" + " " * 100_000 + "\t" * 100_000, "5"),
        "code-in-box": (f"\\boxed{{{touch}}}", "1"),
        "code-in-math": (f"The answer is ${touch}$", "1"),
        "code-as-expression": (f"answer: {touch}", "1"),
        "lambda-in-box": ("\\boxed{(lambda: " + touch + ")()}", "1"),
        # The last one must still be graded right: the grader survived everything above.
        "sane-after-all": ("so \\boxed{\\frac{1}{2}}", "0.5"),
    }


# Child process: grade each item alone (timed) and then all as one batch, report JSON.
CHILD = """
import json, sys, time
from orchestrator.tasks.grading import grade_batch, stop_helper
cases, task, timeout, out = json.load(open(sys.argv[1])), sys.argv[2], float(sys.argv[3]), sys.argv[4]
rows = []
for name, (completion, reference) in cases.items():
    start = time.monotonic()
    [g] = grade_batch([completion], [reference], timeout, task)
    rows.append([name, time.monotonic() - start, g.correct, g.timed_out, g.extracted])
start = time.monotonic()
batch = grade_batch([c for c, _ in cases.values()], [r for _, r in cases.values()], timeout, task)
batch_s = time.monotonic() - start
stop_helper()
json.dump({"items": rows, "batch": [[g.correct, g.timed_out] for g in batch],
           "batch_s": batch_s}, open(out, "w"))
"""


def _write_cases(tmp_path: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    cases = hostile_items(tmp_path)
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(cases))          # ASCII: NUL and lone surrogates escaped
    return path, cases


@pytest.mark.slow
@pytest.mark.parametrize("task", ["math", "gsm8k"])
def test_grade_batch_survives_hostile_output(tmp_path, task):
    cases_path, cases = _write_cases(tmp_path)
    out = tmp_path / "report.json"
    start = time.monotonic()
    result = run_command([sys.executable, "-c", CHILD, cases_path, task, TIMEOUT_S, out],
                         timeout=WHOLE_RUN_S, cwd=ROOT)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    items = {name: (seconds, correct, timed_out) for name, seconds, correct, timed_out, _
             in report["items"]}
    assert list(items) == list(cases)                      # every item graded
    # Cut off or not, an item ends within its deadline plus one helper restart.
    late = {name: round(s, 2) for name, (s, _, _) in items.items() if s > PER_ITEM_S}
    assert not late, late
    assert items["sane-after-all"][1] is True
    assert items["deep-boxed"][1] is True
    assert items["int-4200-digits"][1] is True
    assert not (tmp_path / PWNED).exists(), "model text was executed"
    assert [c for c, _ in report["batch"]] == [items[name][1] for name in cases] or \
        sum(t for _, t in report["batch"]) > 0      # a timed-out item may flip on a loaded box
    assert report["batch"][-1] == [True, False]
    print(f"\n{task}: {len(items)} items, slowest "
          f"{max(items.items(), key=lambda kv: kv[1][0])[0]} "
          f"{max(s for s, _, _ in items.values()):.2f}s, timed out "
          f"{sum(t for _, _, t in items.values())}, batch {report['batch_s']:.1f}s, "
          f"whole run {elapsed:.1f}s")


def test_extraction_alone_is_fast_on_hostile_text(tmp_path):
    """The in-process part (no helper): extraction and exact numbers on every hostile
    completion, each well under a second, in this very process."""
    from orchestrator.tasks.grading import as_number, extract_answer, reference_answer

    for name, (completion, reference) in hostile_items(tmp_path).items():
        for task in (None, "math", "gsm8k", "arith"):
            start = time.monotonic()
            answer = extract_answer(completion, task)
            as_number(answer or "")
            reference_answer(reference, task)
            seconds = time.monotonic() - start
            assert seconds < IN_PROCESS_S, (name, task, seconds)


def _grade_cli(tmp_path: Path, jsonl: Path, task: str = "math"):
    out = tmp_path / "graded.jsonl"
    result = run_command([sys.executable, "-m", "orchestrator", "grade", jsonl, "--task", task,
                          "--out", out, "--timeout", TIMEOUT_S], timeout=WHOLE_RUN_S, cwd=ROOT)
    return result, out


@pytest.mark.slow
def test_grade_cli_on_a_hostile_jsonl(tmp_path):
    cases = hostile_items(tmp_path)
    jsonl = tmp_path / "hostile.jsonl"
    with jsonl.open("w", encoding="utf-8") as f:
        for name, (completion, reference) in cases.items():
            # ensure_ascii: NUL and lone surrogates travel as \u escapes, as JSON allows
            f.write(json.dumps({"id": name, "completion": completion, "answer": reference}) + "\n")
    start = time.monotonic()
    result, out = _grade_cli(tmp_path, jsonl)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-3000:]
    graded = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [g["id"] for g in graded] == list(cases)
    assert all(isinstance(g["correct"], bool) for g in graded)
    by_id = {g["id"]: g for g in graded}
    assert by_id["sane-after-all"]["correct"] is True
    assert by_id["lone-surrogates"]["completion"] == cases["lone-surrogates"][0]
    assert not (tmp_path / PWNED).exists(), "model text was executed"
    assert elapsed < len(cases) * PER_ITEM_S
    assert f"graded {len(cases)} completions" in result.stdout
    print(f"\ngrade CLI: {len(cases)} items in {elapsed:.1f}s: {result.stdout.strip()}")


def test_grade_cli_refuses_raw_non_utf8_with_its_line(tmp_path):
    jsonl = tmp_path / "bytes.jsonl"
    jsonl.write_bytes(b'{"completion": "#### 5", "answer": "5"}\n'
                      b'{"completion": "#### \xff\xfe 5", "answer": "5"}\n')
    result, out = _grade_cli(tmp_path, jsonl)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "bytes.jsonl:2: not UTF-8" in lines[0], result.stderr
    assert not out.exists()
