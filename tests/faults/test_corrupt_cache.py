"""Corrupt cache (issue 12): a real sweep's store is damaged five ways (a folder without
DONE, a truncated model file, an unparsable result.json, a result from another code version,
a foreign file); `synthscale verify` names each, and the next sweep sets the broken stages
aside and computes them again instead of trusting them."""

from __future__ import annotations

import json
import sys

import pytest

from ..conftest import ROOT, run_command
from .sweep_process import Sweep


def _verify(store) -> tuple[int, str]:
    proc = run_command([sys.executable, "-m", "orchestrator", "verify", str(store)], timeout=120,
                       cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr


def _folder(store, stage):
    (folder,) = [f for f in (store / stage).iterdir() if f.is_dir()]
    return folder


@pytest.mark.slow
def test_a_damaged_store_is_reported_by_verify_and_recomputed_by_the_next_sweep(tmp_path):
    out, store = tmp_path / "out", tmp_path / "out" / "artifacts"
    assert Sweep(out).finish(timeout=400) == 0
    assert _verify(out)[0] == 0
    (_folder(store, "teacher_generate") / "DONE").unlink()                     # no DONE
    sft = _folder(store, "sft")
    biggest = max((p for p in sft.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])   # truncated
    (_folder(store, "evaluate") / "result.json").write_text('{"test_error": 0.1')  # unparsable
    base = _folder(store, "base_model") / "result.json"                        # old code's result
    base.write_text(json.dumps({**json.loads(base.read_text()), "field_of_old_code": 1}))
    (store / "sft" / "notes.txt").write_text("put here by hand")              # foreign
    code, report = _verify(out)
    assert code == 1, report
    for needle in ("teacher_generate", "no DONE", f"{biggest.name} has", "unreadable or not this "
                   "code's result type", "base_model", "notes.txt: not written by this store"):
        assert needle in report, (needle, report)
    again = Sweep(out)
    assert again.finish(timeout=400) == 0, again.text[-3000:]
    # three DONE folders set aside (teacher_generate's has no DONE: simply recomputed)
    assert again.text.count("corrupt cache: ") == 3, again.text
    computed = {line.split("] ", 1)[1].split(" ")[0] for line in again.text.splitlines()
                if line.startswith("[") and " on " in line}
    assert computed == {"base_model[tiny]", "teacher_generate[oracle,pool=100]",
                        "sft[n=100,seed=0]", "evaluate[sft_teacher,n=100,seed=0]"}, again.text
    code, report = _verify(out)
    broken = [line for line in report.splitlines() if line.startswith("BROKEN")]
    assert code == 1 and len(broken) == 1 and "notes.txt" in broken[0], report   # foreign stays
