"""Answer extraction, exact and symbolic equivalence, the time bound, and the
agreement with 5,276 human-labelled GSM8K model solutions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from orchestrator.tasks import grading
from orchestrator.tasks.grading import (
    Grade,
    extract_answer,
    grade,
    grade_batch,
    grade_jsonl,
    reference_answer,
)

from ...conftest import ROOT, as_from_a_terminal

# ../shared/data next to the checkout; a fresh clone has none and skips.
GSM8K_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "gsm8k"
# sympy evaluating a power tower: minutes of C-level work, no Python check in between.
ADVERSARIAL = "\\boxed{9^{9^{9}}}"


@pytest.mark.parametrize("text, expected", [
    ("48 / 2 = 24\n24 + 48 = 72\n#### 72", "72"),
    ("#### 1,234\n", "1234"),
    ("#### 5\nQuestion: next one\n#### 9", "5"),                 # first marker: the asked question
    ("so $x = \\boxed{\\frac{1}{2}}$. Check: \\boxed{3}", "3"),  # last box
    ("\\boxed{\\frac{a}{\\{b\\}}}", "\\frac{a}{\\{b\\}}"),       # balanced braces
    ("\\fbox{7}", "7"),
    ("\\boxed 7$", "7"),
    ("Final Answer: The final answer is $5$. I hope it is correct.", "5"),
    ("So the answer is 18 dollars. Done.", "18"),
    ("He makes 9 * 2 = $<<9*2=18>>18 every day.\nA: 18", "18"),
    ("A: $1,000.00", "1000.00"),
    ("The answer is 50%.", "50"),
    ("The total is 12 apples, and 3 are left", "3"),            # last-number fallback
    ("She has 20-5", "5"),                                      # subtraction, not -5
    ("The temperature fell to -5 degrees", "-5"),
    ("\\boxed{5 \\text{ cm}}", "5"),
    ("\\boxed{45^\\circ}", "45"),
    ("no digits here", None),
    ("the answer is \\boxed{", None),                            # truncated box, no number
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_math_task_prefers_boxed_over_hashes():
    text = "Count the #### marks: \\boxed{4}"
    assert extract_answer(text, task="math") == "4"
    assert extract_answer(text) == "marks: \\boxed{4}"


def test_reference_is_solution_or_bare_answer():
    assert reference_answer("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == "72"
    assert reference_answer("She makes $18.\nA: 18") == "18"
    assert reference_answer("The side is $\\boxed{\\sqrt{2}}$.") == "\\sqrt{2}"
    assert reference_answer("\\frac{1}{2}") == "\\frac{1}{2}"
    assert reference_answer("1,000") == "1000"
    assert reference_answer("   ") is None


@pytest.mark.parametrize("completion, reference, correct", [
    ("#### 18.00", "18", True),
    ("#### 18", "#### 18.5", False),
    ("The answer is 0.75", "3/4", True),
    ("\\boxed{\\frac{3}{4}}", "0.75", True),
    ("#### -3", "3", False),
    ("A: 7/14", "#### 34", False),
    ("#### 1.8 billion", "2", False),     # a scale word is not a unit
])
def test_exact_numbers(completion, reference, correct):
    assert grade(completion, reference).correct is correct


def test_numbers_never_start_the_helper():
    grading._CHECKER.close()
    grades = grade_batch(["#### 1,000", "A: 2.50", "\\boxed{\\frac{1}{2}}"], ["1000", "2.5", "0.5"])
    assert [g.correct for g in grades] == [True, True, True]
    assert grading._CHECKER._process is None     # the fast path paid no spawn


@pytest.mark.parametrize("completion, reference, correct", [
    ("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("\\boxed{(1,2)}", "(1, 2)", True),
    ("\\boxed{2x}", "2", False),
    ("\\boxed{x=3}", "3", True),
])
def test_symbolic_equivalence(completion, reference, correct):
    g = grade(completion, reference)
    assert (g.correct, g.timed_out) == (correct, False)


def test_model_text_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('os').system('touch {marker}')"
    for text in (f"\\boxed{{{payload}}}", f"The answer is {payload}", f"#### {payload}"):
        assert grade(text, "0").correct is False
    assert not marker.exists()


def _warm_helper():
    assert grade("\\boxed{x+1}", "1+x").correct    # startup is not part of the item deadline


def test_adversarial_input_is_cut_off_at_the_deadline():
    _warm_helper()
    start = time.monotonic()
    g = grade(ADVERSARIAL, "5", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert g == Grade(correct=False, extracted="9^{9^{9}}", timed_out=True)
    assert elapsed < 1.0 + 1.0, elapsed
    assert grade("\\boxed{x+1}", "1+x").correct      # the helper restarts after the kill


def test_grades_from_a_plain_thread():
    # math-verify's own SIGALRM timeout raises in any non-main thread.
    _warm_helper()
    results: list[Grade] = []
    worker = threading.Thread(target=lambda: results.extend(
        [grade("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}"), grade(ADVERSARIAL, "5", timeout_s=1.0)]))
    worker.start()
    worker.join(timeout=30)
    assert [(g.correct, g.timed_out) for g in results] == [(True, False), (False, True)]


def test_grades_from_a_thread_pool():
    _warm_helper()
    completions = ["\\boxed{0.5}", "\\boxed{\\sin(\\pi/6)}", "\\boxed{x}", ADVERSARIAL] * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        grades = list(pool.map(lambda c: grade(c, "\\frac{1}{2}", timeout_s=1.0), completions))
    assert [g.correct for g in grades] == [True, True, False, False] * 2
    assert [g.timed_out for g in grades] == [False, False, False, True] * 2


def test_batch_reuses_one_helper_process():
    _warm_helper()
    pid = grading._CHECKER._process.pid
    grades = grade_batch(["\\boxed{x^2}", "\\boxed{\\sqrt{4}}", "\\boxed{2y}"], ["x^2", "2", "y"])
    assert [g.correct for g in grades] == [True, True, False]
    assert grading._CHECKER._process.pid == pid


def test_helper_killed_from_outside_is_replaced():
    # e.g. the kernel's OOM killer took it between two items
    _warm_helper()
    grading._CHECKER._process.kill()
    grading._CHECKER._process.wait()
    assert grade("\\boxed{\\frac{x}{x}}", "1").correct


def test_helper_runs_in_a_session_of_its_own():
    # The terminal's Ctrl-C reaches the grading process only, which ends the helper.
    _warm_helper()
    helper = grading._CHECKER._process.pid
    assert os.getsid(helper) == helper != os.getsid(0)
    grading.stop_helper()
    assert not _running(helper)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"no {what} within {timeout_s:.0f} s")


def _helper_of(pid: int) -> int | None:
    for child in psutil.Process(pid).children():
        if "_serve" in " ".join(child.cmdline()):
            return child.pid
    return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_grade_command_signalled_mid_check_ends_its_helper(tmp_path, signum):
    preds = _write_lines(tmp_path / "preds.jsonl",
                         [json.dumps({"completion": ADVERSARIAL, "answer": "5"})])
    # Its own session stands in for a terminal, whose Ctrl-C signals the whole group.
    command = [sys.executable, "-m", "orchestrator", "grade", preds, "--task", "math",
               "--out", tmp_path / "graded.jsonl", "--timeout", "600"]
    proc = subprocess.Popen(as_from_a_terminal(command), cwd=ROOT, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        helper = _wait_for(lambda: _helper_of(proc.pid), 60, "helper process")
        time.sleep(2)                        # sympy imported, the power tower under way
        started = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        assert proc.wait(timeout=15) == 128 + signum
        _wait_for(lambda: not _running(helper), 5, "end of the helper")
        assert time.monotonic() - started < 5
        stderr = proc.stderr.read()
        assert "interrupted: " in stderr and "Traceback" not in stderr, stderr
        assert not (tmp_path / "graded.jsonl").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_helper_dies_with_a_parent_killed_mid_check():
    # SIGKILL runs no cleanup in the parent; the kernel ends the busy helper.
    code = ("from orchestrator.tasks import grading\n"
            "assert grading.grade('\\\\boxed{x+1}', '1+x').correct\n"
            "print(grading._CHECKER._process.pid, flush=True)\n"
            f"grading.grade({ADVERSARIAL!r}, '5', timeout_s=600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    helper = int(parent.stdout.readline())
    time.sleep(1)
    assert _running(helper)
    parent.kill()
    parent.wait()
    _wait_for(lambda: not _running(helper), 5, "end of the orphaned helper")


def test_grade_batch_checks_lengths():
    with pytest.raises(ValueError, match="2 completions but 1 references"):
        grade_batch(["#### 1", "#### 2"], ["1"])


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_grade_jsonl_writes_verdicts(tmp_path):
    rows = [{"id": 1, "completion": "3 + 4 = 7\n#### 7", "answer": "2 + 5 = 7\n#### 7"},
            {"id": 2, "completion": "#### 8", "answer": 9},
            {"id": 3, "completion": "I am not sure", "answer": "\\frac{1}{2}"}]
    preds = _write_lines(tmp_path / "preds.jsonl", [json.dumps(r) for r in rows])
    summary = grade_jsonl(preds, tmp_path / "out" / "graded.jsonl", task="gsm8k")
    graded = [json.loads(line) for line in (tmp_path / "out" / "graded.jsonl").read_text().splitlines()]
    assert [g["id"] for g in graded] == [1, 2, 3]
    assert [(g["correct"], g["extracted"]) for g in graded] == [(True, "7"), (False, "8"), (False, None)]
    assert (summary.n, summary.n_correct, summary.n_timed_out) == (3, 1, 0)
    assert summary.accuracy == pytest.approx(1 / 3)


@pytest.mark.parametrize("lines, message", [
    (['{"completion": "#### 1", "answer": "1"}', "{oops"], r"^preds\.jsonl:2: invalid JSON"),
    (['{"completion": "#### 1", "answer": "1"}', "", '{"answer": "1"}'],
     r'^preds\.jsonl:3: missing field "completion"$'),
    (['{"completion": "#### 1", "answer": ["1"]}'],
     r'^preds\.jsonl:1: field "answer": expected string or number, got list$'),
    (['{"completion": "#### 1", "answer": " "}'], r'^preds\.jsonl:1: field "answer": empty'),
    (["[1, 2]"], r"^preds\.jsonl:1: expected a JSON object, got list$"),
])
def test_grade_jsonl_rejects_bad_lines(tmp_path, lines, message):
    preds = _write_lines(tmp_path / "preds.jsonl", lines)
    with pytest.raises(ValueError, match=message):
        grade_jsonl(preds, tmp_path / "graded.jsonl", task="gsm8k")
    assert not (tmp_path / "graded.jsonl").exists()


def test_grade_jsonl_rejects_unknown_task(tmp_path):
    preds = _write_lines(tmp_path / "preds.jsonl", ['{"completion": "#### 1", "answer": "1"}'])
    with pytest.raises(ValueError, match="unknown task 'aime'"):
        grade_jsonl(preds, tmp_path / "graded.jsonl", task="aime")


def test_agrees_with_labelled_gsm8k_model_solutions():
    """OpenAI's 5,276 GSM8K test solutions from four models, each labelled
    correct or not by the dataset authors: grading must agree on >= 99.5 %."""
    path = GSM8K_DIR / "example_model_solutions.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not present (it lives outside the repository)")
    agree, disagreements = 0, []
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for row in rows:
        for model, sample in row.items():
            if not isinstance(sample, dict):
                continue
            g = grade(sample["solution"], row["ground_truth"], task="gsm8k")
            if g.correct == sample["is_correct"]:
                agree += 1
            else:
                disagreements.append((model, sample["is_correct"], g.extracted))
    n = agree + len(disagreements)
    assert n == 5276
    assert agree / n >= 0.995, disagreements[:20]


def test_arith_counts_only_the_final_answer_marker():
    # A tiny model's babble must not score through its last digit.
    assert not grade("<Cr3!.", "3", task="arith").correct
    assert grade("<Cr3!.", "3").correct                      # the generic fallback would
    assert grade("1 + 2 = 3\n#### 3", "3", task="arith").correct
    assert not grade("1 + 2 = 3\n#### 4", "3", task="arith").correct
    assert grade("1 + 2 = 3\n#### 3", "3", task="arith").extracted == "3"
