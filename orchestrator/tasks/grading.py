"""Grading: a completion's final answer, and whether it equals the reference.

Extraction finds the final answer in free text (`#### N`, the last `\\boxed{}`,
"the answer is X", a final `A: X` line, else the last number). Equivalence is
exact for plain numbers (`fractions.Fraction`, in this process) and symbolic
otherwise (math-verify), and every symbolic check is time-bounded.

Why a helper process: math-verify bounds its own work with SIGALRM, which only
works in a process's main thread, so it breaks in Ray worker threads and thread
pools; and sympy can spin for minutes (or allocate gigabytes) in C code on
adversarial input such as `9^{9^{9}}`, which no in-process timer can stop.
So math-verify runs with its timeouts off in one persistent helper process (a
fresh interpreter, never a fork: the caller may already run threads); a check
that passes its deadline kills that process, which restarts on the next
symbolic item.

This module must never execute model text: no eval/exec/sympify outside
math-verify's parser, and it must not import torch, ray or mlflow.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from orchestrator.files import write_atomically
from orchestrator.processes import end_group, start_group
from orchestrator.tasks.jsonl import read_jsonl, require_str

MAX_TEXT_CHARS = 20_000      # longer completions are degenerate; the answer sits in the head
NUMBER_SCAN_CHARS = 2_000    # the last-number fallback only looks this far back
MAX_SYMBOLIC_CHARS = 500     # longer "answers" are not worth a sympy parse
MAX_NUMBER_CHARS = 4_000     # below Python's int-from-str digit limit (4,300)
HELPER_START_TIMEOUT_S = 120.0   # importing sympy + antlr on a loaded 2-core machine
HELPER_MEMORY_BYTES = 4 << 30    # address-space cap of the helper: sympy can allocate fast
TASKS = ("gsm8k", "math", "arith")

_GSM8K_RE = re.compile(r"####[ \t]*([^\n]*)")
_ANSWER_IS_RE = re.compile(r"(?:final answer|the answer)(?: is|:)[ \t:]*([^\n]*)", re.IGNORECASE)
_A_LINE_RE = re.compile(r"^[ \t]*A:[ \t]*([^\n]*)", re.MULTILINE)
_BOXED_RE = re.compile(r"\\(?:boxed|fbox)\b")
# A minus sign counts only where it cannot be subtraction ("20-5" ends in 5, not -5).
_NUMBER_RE = re.compile(r"(?:(?<![\w)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<!\d)\.\d+")
_PLAIN_NUMBER_RE = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")
_LATEX_FRAC_RE = re.compile(r"(-?)\\[dt]?frac\{(-?\d+)\}\{(\d+)\}")
_DIGIT_COMMA_RE = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# "18 dollars", "5 \text{ cm}", "45^\circ": a number followed by a unit only.
# `[A-Za-z]{2}`, not `{2,}`: two overlapping letter runs backtrack quadratically on
# a 20,000-letter "unit" with no match at its end (1.3 s per completion, measured).
_NUMBER_UNIT_RE = re.compile(
    r"(-?[\d.,/]+)(?:\s*\\(?:text|mbox|mathrm)\{[^{}]*\}|\s*\^\s*\{?\\circ\}?"
    r"|\s+[A-Za-z]{2}[A-Za-z' ]*)")
# Scale words change the value: "1.8 billion" is not 1.8, so it is not a unit.
_SCALE_WORDS = ("thousand", "million", "billion", "trillion", "hundred", "dozen")


@dataclass(frozen=True)
class Grade:
    """One graded completion. `timed_out` means the symbolic check was cut off
    (it then counts as incorrect)."""

    correct: bool
    extracted: str | None
    timed_out: bool = False


@dataclass(frozen=True)
class GradeSummary:
    """Counts over one graded predictions file."""

    n: int
    n_correct: int
    accuracy: float
    n_timed_out: int


# ---------------------------------------------------------------- extraction


def extract_answer(text: str, task: str | None = None) -> str | None:
    """The final answer of a solution or completion, normalised, or None.

    Priority: `#### N`, the last `\\boxed{}`/`\\fbox{}`, "the (final) answer is
    X", a last `A: X` line, the last number. For task "math" `\\boxed{}` comes
    first: MATH solutions box their answer and may contain `####` in prose.
    For task "arith" only `#### N` counts: every solution of that procedural
    task ends so, and a tiny model's unfinished babble must not score by the
    accident of its last digit.
    """
    text = text[:MAX_TEXT_CHARS]
    if task == "arith":
        answer = _gsm8k_answer(text)
        return (normalize_answer(answer) or None) if answer is not None else None
    answer = _marked_answer(text, task)
    if answer is None:
        numbers = _NUMBER_RE.findall(text[-NUMBER_SCAN_CHARS:])
        answer = numbers[-1] if numbers else None
    if answer is None:
        return None
    return normalize_answer(answer) or None


def _marked_answer(text: str, task: str | None) -> str | None:
    """The answer behind an explicit marker, trying markers in priority order."""
    finders = [_gsm8k_answer, last_boxed, _answer_is, _a_line_answer]
    if task == "math":
        finders[0], finders[1] = finders[1], finders[0]
    for finder in finders:
        answer = finder(text)
        if answer is not None and answer.strip():
            return answer
    return None


def _gsm8k_answer(text: str) -> str | None:
    # The first marker, as in GSM8K's own grader: a model that rambles on into
    # a new "Question:" writes later markers for other questions.
    match = _GSM8K_RE.search(text)
    return match.group(1) if match else None


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (balanced braces) or `\\boxed N`."""
    matches = list(_BOXED_RE.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    rest = text[start:].lstrip()
    if not rest.startswith("{"):    # `\boxed 5`, seen in a few MATH solutions
        token = re.match(r"[^\s$]+", rest)
        return token.group(0) if token else None
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return None     # unbalanced: truncated output


def _answer_is(text: str) -> str | None:
    matches = _ANSWER_IS_RE.findall(text)
    if not matches:
        return None
    answer = matches[-1].strip()
    inner = _ANSWER_IS_RE.search(answer)
    while inner:    # "Final Answer: The final answer is $5$": the innermost phrase holds it
        answer = inner.group(1).strip()
        inner = _ANSWER_IS_RE.search(answer)
    if _BOXED_RE.search(answer):    # an unbalanced (truncated) box: no answer here
        return None
    math_span = re.match(r"\$([^$]+)\$", answer)
    if math_span:       # "The final answer is $5$. I hope it is correct."
        return math_span.group(1)
    return re.split(r"\.(?:\s|$)", answer, maxsplit=1)[0]   # cut at the sentence end


def _a_line_answer(text: str) -> str | None:
    matches = _A_LINE_RE.findall(text)
    return matches[-1] if matches else None


def normalize_answer(answer: str) -> str:
    """Strip presentation around an answer: `$`, `%`, thousands commas, a
    trailing period, units after a number. "$1,000.00" -> "1000.00"."""
    s = answer.strip()
    for token in ("\\$", "$", "\\%", "%", "\\!", "{,}"):
        s = s.replace(token, "")
    s = _DIGIT_COMMA_RE.sub("", s.replace("\\,", ""))
    s = s.strip().rstrip(".").strip()
    unit = _NUMBER_UNIT_RE.fullmatch(s)
    if unit and not any(word in s.lower() for word in _SCALE_WORDS):
        s = unit.group(1).replace(",", "").rstrip(".")
    return s


def as_number(answer: str) -> Fraction | None:
    """The exact value of a plain number ("18", "-0.5", "3/4", "\\frac{3}{4}"),
    or None when the answer is anything else."""
    if len(answer) > MAX_NUMBER_CHARS:
        return None
    s = answer.replace(" ", "")
    frac = _LATEX_FRAC_RE.fullmatch(s)
    if frac:
        sign, num, den = frac.groups()
        s = f"{sign}{num}/{den}"
    if not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):     # "1.5/2", "3/0": leave them to math-verify
        return None


def reference_answer(reference: str, task: str | None = None) -> str | None:
    """The answer a reference stands for: the marked answer of a full solution
    (`#### N`, `\\boxed{}`, "A: N"), else the reference itself as a bare answer.

    Unlike completions, a reference never falls back to its last number: a
    solution without a marker is a bare answer (e.g. "\\frac{1}{2}").
    """
    marked = _marked_answer(reference[:MAX_TEXT_CHARS], task)
    answer = normalize_answer(marked if marked is not None else reference)
    return answer or None


# ---------------------------------------------------------------- grading


def grade(completion: str, reference: str, timeout_s: float = 5.0,
          task: str | None = None) -> Grade:
    """Grade one completion against a reference solution or bare answer.

    Plain numbers on both sides compare exactly here; anything else goes to
    math-verify in the helper process, cut off after `timeout_s` seconds.
    Safe to call from any thread.
    """
    if timeout_s <= 0:
        raise ValueError(f"grade: timeout_s must be > 0, got {timeout_s}")
    gold = reference_answer(reference, task)
    if gold is None:
        raise ValueError(f"grade: reference has no answer: {reference[:80]!r}")
    extracted = extract_answer(completion, task)
    if extracted is None:
        return Grade(False, None)
    gold_value, pred_value = as_number(gold), as_number(extracted)
    if gold_value is not None and pred_value is not None:
        return Grade(gold_value == pred_value, extracted)
    if extracted == gold:
        return Grade(True, extracted)
    if len(extracted) > MAX_SYMBOLIC_CHARS or len(gold) > MAX_SYMBOLIC_CHARS:
        return Grade(False, extracted)
    verdict = _CHECKER.check(gold, extracted, timeout_s)
    if verdict is None:
        return Grade(False, extracted, timed_out=True)
    return Grade(verdict, extracted)


def grade_batch(completions: list[str], references: list[str], timeout_s: float = 5.0,
                task: str | None = None) -> list[Grade]:
    """`grade` over aligned lists. One helper process serves the whole batch
    (and later batches); it is only started if some item needs sympy."""
    if len(completions) != len(references):
        raise ValueError(f"grade_batch: {len(completions)} completions but "
                         f"{len(references)} references")
    return [grade(c, r, timeout_s, task) for c, r in zip(completions, references, strict=True)]


def grade_jsonl(in_path: str | Path, out_path: str | Path, task: str,
                timeout_s: float = 5.0) -> GradeSummary:
    """Grade a predictions file: each line has `completion` and `answer` (a
    reference solution or a bare answer). Writes the same lines plus
    `correct` and `extracted` to `out_path`.

    Every line is checked before any grading, so bad input fails fast with
    ValueError `file:line: ...`.
    """
    if task not in TASKS:
        raise ValueError(f"grade: unknown task {task!r}; expected one of {', '.join(TASKS)}")
    rows = _read_rows(Path(in_path), task)
    grades = grade_batch([r["completion"] for r in rows],
                         [str(r["answer"]) for r in rows], timeout_s, task)
    _write_graded(Path(out_path), rows, grades)
    n_correct = sum(g.correct for g in grades)
    return GradeSummary(n=len(rows), n_correct=n_correct,
                        accuracy=n_correct / len(rows) if rows else 0.0,
                        n_timed_out=sum(g.timed_out for g in grades))


def _read_rows(in_path: Path, task: str) -> list[dict]:
    rows = []
    try:
        for where, row in read_jsonl(in_path):
            require_str(row, "completion", where)
            reference = require_str(row, "answer", where, allow_number=True)
            if reference_answer(reference, task) is None:
                raise ValueError(f'{where}: field "answer": empty reference answer')
            rows.append(row)
    except UnicodeDecodeError:
        raise ValueError(_not_utf8(in_path)) from None
    return rows


def _not_utf8(path: Path) -> str:
    """The message for a file that is not UTF-8, naming the first bad line (the text
    reader decodes in chunks, so its error knows no line)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return (f"{path.name}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
                        f"column {exc.start + 1}); JSONL must be UTF-8, other bytes escaped")
    return f"{path.name}: not UTF-8 text"


def _write_graded(out_path: Path, rows: list[dict], grades: list[Grade]) -> None:
    # Write then rename, so a half-written file never looks like a result.
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as f:
            for row, g in zip(rows, grades, strict=True):
                f.write(_json_line({**row, "correct": g.correct, "extracted": g.extracted}))
    write_atomically(out_path, write)


def _json_line(obj: dict) -> str:
    """One JSONL line, readable UTF-8 where possible. A lone surrogate ("\\udcff" in the
    input JSON, as a byte-level decoder can emit) has no UTF-8 form: that line is
    written with \\u escapes, which is the same JSON value."""
    line = json.dumps(obj, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(obj)
    return line + "\n"


# ---------------------------------------------------------------- helper process


class _SymbolicChecker:
    """One persistent math-verify process, shared by all threads of this one.

    `check` sends one (gold, prediction) pair and waits at most `timeout_s`;
    past that it kills the process (SIGKILL stops sympy even inside C code)
    and reports None. The next check starts a fresh process.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._reader = None
        self._owner_pid: int | None = None

    def check(self, gold: str, prediction: str, timeout_s: float) -> bool | None:
        with self._lock:
            self._send(json.dumps([gold, prediction]))
            self._sock.settimeout(timeout_s)
            try:
                reply = self._reader.readline()
            except TimeoutError:
                self._stop()
                return None
            if not reply:       # the helper died mid-item (e.g. a hard memory failure)
                self._stop()
                return False
            return json.loads(reply) is True

    def _send(self, message: str) -> None:
        data = (message + "\n").encode()
        self._ensure_started()
        try:
            self._sock.sendall(data)
        except OSError:     # the helper died between items: one fresh start, then give up
            self._stop()
            self._ensure_started()
            self._sock.sendall(data)

    def _ensure_started(self) -> None:
        if self._owner_pid != os.getpid():
            # A forked child inherited our socket; sharing it would interleave
            # answers, so this process gets its own helper.
            self._process = self._sock = self._reader = None
        if self._process is not None and self._process.poll() is None:
            return
        self._stop()
        self._process, self._sock = _start_helper()
        self._reader = self._sock.makefile("rb")
        self._owner_pid = os.getpid()
        self._sock.settimeout(HELPER_START_TIMEOUT_S)
        try:
            ready = self._reader.readline()
        except TimeoutError:
            ready = b""
        if ready.strip() != b'"ready"':
            self._stop()
            raise RuntimeError("grading: the math-verify helper process did not start within "
                               f"{HELPER_START_TIMEOUT_S:.0f} s (is math-verify installed?)")

    def _stop(self) -> None:
        if self._process is not None and self._owner_pid == os.getpid():
            end_group(self._process, grace_s=0)     # SIGKILL stops sympy even inside C code
            self._reader.close()
            self._sock.close()
        self._process = self._sock = self._reader = None

    def close(self) -> None:
        with self._lock:
            self._stop()


def _start_helper() -> tuple[subprocess.Popen, socket.socket]:
    """Start `_serve` in a fresh interpreter connected by a socket pair.

    A plain subprocess, not multiprocessing: "spawn" and "forkserver" re-run
    the caller's __main__ in the child, which fails for a script without an
    `if __name__ == "__main__"` guard (and for some notebook and Ray worker
    mains); fork after threads can deadlock. exec of a new interpreter does
    neither.

    Its own process group keeps the terminal's Ctrl-C (and a traceback) out
    of it; the caller ends it. If the caller dies unannounced, an idle helper
    reads end-of-file; a busy one is killed by the kernel (Linux
    PR_SET_PDEATHSIG), asked for only when the main thread starts it: the
    signal follows the exit of the starting *thread*, and a pool thread's
    exit must not kill an item another thread is waiting on.
    """
    parent_sock, child_sock = socket.socketpair()
    package_root = str(Path(__file__).resolve().parents[2])
    pythonpath = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    parent = os.getpid() if threading.current_thread() is threading.main_thread() else None
    code = (f"from orchestrator.tasks.grading import _serve; "
            f"_serve({child_sock.fileno()}, die_with={parent})")
    try:
        process = start_group(
            [sys.executable, "-c", code], pass_fds=(child_sock.fileno(),),
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    finally:
        child_sock.close()
    return process, parent_sock


_CHECKER = _SymbolicChecker()
atexit.register(_CHECKER.close)


def stop_helper() -> None:
    """End the math-verify helper process now (it also ends at exit); the next
    symbolic check starts a fresh one."""
    _CHECKER.close()


def _serve(fd: int, die_with: int | None = None) -> None:
    """Helper process main loop: JSON [gold, prediction] lines in, true/false
    lines out, until the parent closes the socket."""
    if die_with is not None:
        _die_with_parent(die_with)
    _limit_memory()
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # "timeout disabled" is on purpose
    from math_verify import parse, verify

    sock = socket.socket(fileno=fd)
    sock.sendall(b'"ready"\n')
    for line in sock.makefile("rb"):
        gold, prediction = json.loads(line)
        try:
            # Timeouts off: SIGALRM is exactly what we avoid; the parent's
            # deadline bounds this call instead.
            gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=None)
            pred_parsed = parse(f"\\boxed{{{prediction}}}", parsing_timeout=None)
            verdict = bool(gold_parsed and pred_parsed
                           and verify(gold_parsed, pred_parsed, timeout_seconds=None))
        except Exception:   # MemoryError and RecursionError included: an unparseable answer is wrong
            verdict = False
        sock.sendall(b"true\n" if verdict else b"false\n")


def _die_with_parent(parent_pid: int) -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:      # the parent died before the request took effect
        os._exit(0)


def _limit_memory() -> None:
    try:
        import resource
    except ImportError:     # not on POSIX: no cap, the deadline still holds
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = HELPER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, HELPER_MEMORY_BYTES)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
