"""The suite's leak check (conftest.nothing_outlives_the_suite), run on a
nested pytest session: leftovers fail it and are ended, a clean session passes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from .conftest import ROOT

LEAKY = '''
import subprocess, sys

def test_leaves_a_listener_and_an_orphan(tmp_path_factory):
    listener = subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(); "
                                 "s.bind(('127.0.0.1', 0)); s.listen(); time.sleep(300)"],
                                start_new_session=True)
    orphan = subprocess.run(["bash", "-c", "sleep 307 > /dev/null 2>&1 & echo $!"], capture_output=True, text=True)
    with open({pids!r}, "w") as f:
        f.write(f"{{listener.pid}} {{orphan.stdout.strip()}}")
'''
CLEAN = '''
import subprocess

def test_ends_what_it_starts():
    child = subprocess.Popen(["sleep", "300"])
    child.terminate()
    child.wait()
'''


FAILS_WITH_A_SERVER = '''
import urllib.request

def test_fails_while_the_server_runs(mlflow_server):
    with open({record!r}, "w") as f:
        f.write(mlflow_server.rsplit(":", 1)[1])
    with urllib.request.urlopen(mlflow_server + "/health", timeout=10) as reply:
        assert reply.status == 200
    assert False, "on purpose"
'''


def _nested_session(tmp_path, test_code: str, grace_s: str) -> subprocess.CompletedProcess:
    conftest = (ROOT / "tests" / "conftest.py").read_text()
    where = "ROOT = Path(__file__).resolve().parents[1]"
    assert where in conftest
    (tmp_path / "conftest.py").write_text(conftest.replace(where, f"ROOT = Path({str(ROOT)!r})"))
    (tmp_path / "test_nested.py").write_text(test_code)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_nested.py")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120,
                          env={**os.environ, "SYNTHSCALE_LEAK_GRACE_S": grace_s})


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_leftover_processes_and_listeners_fail_the_session_and_are_ended(tmp_path):
    pids_file = tmp_path / "pids"
    started = time.monotonic()
    result = _nested_session(tmp_path, LEAKY.format(pids=str(pids_file)), grace_s="1")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "1 passed, 1 error" in output
    listener, orphan = map(int, pids_file.read_text().split())
    assert "2 things the tests started outlived them by 1 s" in output
    assert f"pid {listener} `{sys.executable} -c import socket" in output
    assert "listening on 127.0.0.1:" in output
    assert f"pid {orphan} `sleep 307`" in output       # reparented to init, found by its tag
    deadline = time.monotonic() + 10
    while (_running(listener) or _running(orphan)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(listener) and not _running(orphan)
    assert time.monotonic() - started < 60


def test_a_session_that_ends_what_it_starts_passes(tmp_path):
    result = _nested_session(tmp_path, CLEAN, grace_s="20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout and "outlived" not in result.stdout


@pytest.mark.slow
def test_the_mlflow_server_fixture_ends_its_group_when_a_test_fails(tmp_path):
    record = tmp_path / "port"
    result = _nested_session(tmp_path, FAILS_WITH_A_SERVER.format(record=str(record)),
                             grace_s="5")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "1 failed" in output and "on purpose" in output, output
    assert "outlived" not in output, output             # uvicorn, huey: all ended
    port = int(record.read_text())
    assert not any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.net_connections(kind="inet"))
