"""Ending what the project starts, with real processes and real signals: a
child's whole session ends (orphans, members of other groups, ones that
ignore SIGTERM), signals become the conventional exit codes, and a taken
port names its holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from orchestrator import processes
from orchestrator.processes import (
    PortInUse,
    end_group,
    ensure_port_free,
    run_in_group,
    session_members,
    start_group,
)

from ..conftest import ROOT, alive, as_from_a_terminal, run_command

# Prints the pids of four processes, then waits: a plain child, an orphan
# (its parent exits at once), one in a process group of its own within the
# session, and one that ignores SIGTERM.
FAMILY = """
sleep 300 & echo $!
( sleep 300 & echo $! )
python3 -c 'import os, time; os.setpgid(0, 0); print(os.getpid(), flush=True); time.sleep(300)' &
( trap '' TERM; exec sleep 300 ) & echo $!
wait
"""
# A command that runs its argv in a group, as `ui` does, and exits as `ui` does.
RUNNER = """
import sys
from orchestrator.processes import exit_code, run_in_group
try:
    sys.exit(run_in_group(sys.argv[1:]))
except KeyboardInterrupt as interrupt:
    print("stopped", flush=True)
    sys.exit(exit_code(interrupt))
"""


def _read_pids(stream, n: int) -> set[int]:
    return {int(stream.readline()) for _ in range(n)}


def _wait_for_descendants(pid: int, n: int, timeout_s: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {p.pid for p in psutil.Process(pid).children(recursive=True)}
        if len(found) >= n:
            return found
        time.sleep(0.05)
    pytest.fail(f"pid {pid} did not start {n} processes")


def test_end_group_ends_orphans_other_groups_and_sigterm_ignorers():
    family = start_group(["bash", "-c", FAMILY], stdout=subprocess.PIPE, text=True)
    pids = _read_pids(family.stdout, 4) | {family.pid}
    assert alive(pids) == pids and set(session_members(family.pid)) >= pids
    started = time.monotonic()
    end_group(family, grace_s=1.0)
    took = time.monotonic() - started
    assert not alive(pids) and session_members(family.pid) == []
    assert 1.0 <= took < 1.0 + 2.0, took        # the SIGTERM ignorer needed SIGKILL
    assert family.returncode == -signal.SIGTERM


def test_without_proc_the_group_probe_still_ends_the_group(monkeypatch, tmp_path):
    # macOS and other systems without /proc: killpg(pgid, 0) says whether any is left.
    monkeypatch.setattr(processes, "_PROC", tmp_path / "no-proc")
    family = start_group(["bash", "-c", "sleep 300 & ( trap '' TERM; exec sleep 300 ) & wait"])
    pids = _wait_for_descendants(family.pid, 2) | {family.pid}
    assert session_members(family.pid) == [family.pid]
    end_group(family, grace_s=0.5)
    assert not alive(pids) and session_members(family.pid) == []


def test_end_group_returns_as_soon_as_everything_stopped():
    family = start_group(["bash", "-c", "sleep 300 & sleep 300 & wait"])
    pids = _wait_for_descendants(family.pid, 2) | {family.pid}
    started = time.monotonic()
    end_group(family, grace_s=30)
    assert time.monotonic() - started < 2
    assert not alive(pids)


def test_zero_grace_is_sigkill_at_once():
    family = start_group(["bash", "-c", "trap '' TERM; sleep 300 & wait"])
    pids = _wait_for_descendants(family.pid, 1) | {family.pid}
    started = time.monotonic()
    end_group(family, grace_s=0)
    assert time.monotonic() - started < 2 and not alive(pids)
    assert family.returncode == -signal.SIGKILL


def test_a_child_exiting_on_its_own_ends_what_it_left():
    marker = "synthscale-orphan-probe"
    code = run_in_group(["bash", "-c", f"exec -a {marker} sleep 300 & exit 3"])
    assert code == 3
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def test_a_test_command_that_times_out_takes_its_group_with_it():
    # tests/conftest.run_command: subprocess.run would SIGKILL the first pid only.
    marker = "synthscale-timeout-probe"
    with pytest.raises(subprocess.TimeoutExpired):
        run_command(["bash", "-c", f"(exec -a {marker} sleep 300) & wait"], timeout=1)
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]


def _start_runner(script: str, n_processes: int) -> tuple[subprocess.Popen, set[int]]:
    """RUNNER running `bash -c script` in its own session (as a terminal would)."""
    runner = subprocess.Popen(as_from_a_terminal([sys.executable, "-c", RUNNER, "bash", "-c",
                                                  script]),
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    return runner, _wait_for_descendants(runner.pid, n_processes)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_ends_the_group_and_exits_128_plus_signal(signum):
    runner, pids = _start_runner("sleep 300 & sleep 300 & wait", 3)
    started = time.monotonic()
    runner.send_signal(signum)
    assert runner.wait(timeout=15) == 128 + signum
    assert not alive(pids), alive(pids)
    assert time.monotonic() - started < 5
    assert runner.stdout.read() == "stopped\n"


def test_ctrl_c_to_the_terminal_group_reaches_only_the_runner():
    # A terminal's Ctrl-C signals its whole foreground group; the child's own
    # session keeps it out, so the runner alone decides how the group ends.
    runner, pids = _start_runner("trap 'echo child-got-sigint' INT; sleep 300 & wait", 2)
    os.killpg(runner.pid, signal.SIGINT)
    assert runner.wait(timeout=15) == 130
    assert not alive(pids)
    assert "child-got-sigint" not in runner.stdout.read()


def test_ctrl_c_typed_in_a_real_terminal():
    master, slave = os.openpty()
    try:
        runner = subprocess.Popen(
            as_from_a_terminal([sys.executable, "-c", RUNNER, "bash", "-c", "sleep 300 & wait"],
                               tty=os.ttyname(slave)),
            cwd=ROOT, start_new_session=True)
        pids = _wait_for_descendants(runner.pid, 2) | {runner.pid}
        os.write(master, b"\x03")                  # the line discipline sends SIGINT
        assert runner.wait(timeout=15) == 130
        assert not alive(pids)
        assert b"stopped" in os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)


def test_a_signal_started_ignored_stays_ignored():
    # `nohup python -m orchestrator ui ...`: closing the terminal must not end it.
    runner = subprocess.Popen(["nohup", sys.executable, "-c", RUNNER, "sleep", "300"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              start_new_session=True)
    pids = _wait_for_descendants(runner.pid, 1) | {runner.pid}
    runner.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert alive(pids) == pids
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=15) == 128 + signal.SIGTERM
    assert not alive(pids)


def test_a_second_signal_skips_the_grace():
    runner, pids = _start_runner("trap '' TERM; sleep 300 & wait", 2)
    runner.send_signal(signal.SIGTERM)          # grace: processes.GRACE_S, ignored by the child
    time.sleep(0.5)
    started = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=15) == 128 + signal.SIGTERM
    assert time.monotonic() - started < processes.GRACE_S - 1
    assert not alive(pids)


def test_a_taken_port_names_its_holder_until_it_is_ended():
    server = start_group([sys.executable, "-c", "import socket, time; s = socket.socket(); "
                          "s.bind(('127.0.0.1', 0)); s.listen(); "
                          "print(s.getsockname()[1], flush=True); time.sleep(300)"],
                         stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        with pytest.raises(PortInUse) as taken:
            ensure_port_free("127.0.0.1", port)
        assert str(taken.value).startswith(f"127.0.0.1:{port} is already in use by pid "
                                           f"{server.pid} ({sys.executable} -c import socket")
        assert f"process group {server.pid}; " in str(taken.value)
        assert f"`kill -TERM -- -{server.pid}`" in str(taken.value)
        with pytest.raises(PortInUse):
            ensure_port_free("0.0.0.0", port)        # the wildcard overlaps loopback
    finally:
        end_group(server)
    ensure_port_free("127.0.0.1", port)              # free once the holder is gone


def test_an_owner_that_ended_but_was_not_reaped_is_gone():
    """A zombie still answers signal 0; an attempt it owned is dead all the same (a killed
    Ray node's workers stay zombies where PID 1 does not reap them)."""
    import socket
    import subprocess
    import sys
    import time

    from orchestrator.processes import owner_is_gone

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    tag = f"{socket.gethostname()}:{child.pid}"
    try:
        assert owner_is_gone(tag) is False
        child.kill()
        deadline = time.monotonic() + 10
        while "Z" not in open(f"/proc/{child.pid}/stat").read().rpartition(")")[2][:3]:
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.05)
        assert owner_is_gone(tag) is True          # not reaped yet: a zombie
    finally:
        child.kill()
        child.wait()
    assert owner_is_gone(tag) is True
