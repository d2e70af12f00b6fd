"""files.write_atomically: the old file or the new one, never half, never a leftover."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator import files


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old\n")

    def broken(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        files.write_atomically(target, broken)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["results.csv"]
    files.write_atomically(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n" and os.listdir(tmp_path) == ["results.csv"]


def test_a_writer_killed_outright_keeps_the_old_file_and_its_leftover_is_removed_later(
        tmp_path):
    """SIGKILL in the middle of writing (the child writes forever): the table still reads
    whole; the dead writer's temporary file goes once it is stale."""
    target = tmp_path / "results.csv"
    target.write_text("old\n")
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, itertools; from orchestrator.files import write_atomically\n"
        "def forever(tmp):\n"
        "    with open(tmp, 'w') as f:\n"
        "        for i in itertools.count(): f.write('row\\n'); f.flush()\n"
        f"write_atomically(__import__('pathlib').Path({str(target)!r}), forever)")],
        cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".results.csv.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.kill()
    child.wait()
    (leftover,) = list(tmp_path.glob(".results.csv.*.tmp"))
    assert target.read_text() == "old\n"
    files.write_atomically(target, lambda tmp: tmp.write_text("new\n"))
    assert leftover.exists()                     # could still be a live writer's
    old = time.time() - files.STALE_SECONDS - 5
    os.utime(leftover, (old, old))
    files.write_atomically(target, lambda tmp: tmp.write_text("newer\n"))
    assert not leftover.exists() and target.read_text() == "newer\n"


def test_a_full_disk_is_one_error_naming_the_file(tmp_path):
    import errno

    def full(tmp):
        tmp.write_text("x")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"results.csv: disk full while writing it \(") as info:
        files.write_atomically(tmp_path / "results.csv", full)
    assert info.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []
