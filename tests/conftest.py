"""Fixtures shared by the whole suite: repository paths, a real MLflow server,
and the check that nothing the tests started outlives them."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest

from orchestrator.processes import end_group, start_group

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Nothing in the suite may phone home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Every process the tests start inherits this tag, so the leak check finds it
# even after it has been orphaned (reparented to init). A nested pytest gets its own.
# A nested pytest extends the tag: its leftovers are ours too, ours not its.
SESSION_TAG = "SYNTHSCALE_TEST_SESSION"
os.environ[SESSION_TAG] = "/".join(filter(None, [os.environ.get(SESSION_TAG),
                                                 f"{os.getpid()}-{uuid.uuid4().hex[:8]}"]))
# Ray and MLflow take a few seconds to stop after a clean shutdown: not a leak.
LEAK_GRACE_S = float(os.environ.get("SYNTHSCALE_LEAK_GRACE_S", "20"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_from_a_terminal(command: list, tty: str | None = None) -> list[str]:
    """`command` with SIGINT and SIGHUP at their defaults, as a terminal's
    foreground job has them (a pytest started by `make test &` in a script
    inherits SIGINT ignored and would pass that on). With `tty` (a pty's
    slave path) and start_new_session=True, that terminal becomes the
    command's controlling terminal and stdio: ^C written to its master is a
    real Ctrl-C."""
    return [sys.executable, "-c", "import os, signal, sys; "
            "[signal.signal(s, signal.SIG_DFL) for s in (signal.SIGINT, signal.SIGHUP)]; "
            "tty = sys.argv.pop(1); "
            "fd = os.open(tty, os.O_RDWR) if tty else None; "
            "fd is None or [os.dup2(fd, i) for i in (0, 1, 2)]; "
            "os.execvp(sys.argv[1], sys.argv[1:])", tty or "", *map(str, command)]


def run_command(command: list, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for commands that start servers or Ray: the command runs
    in a process group of its own, and a timeout (or Ctrl-C) ends that whole
    group, not only its first process. A normal exit is left alone so that the
    leak check sees what the command itself left behind."""
    process = start_group([str(c) for c in command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kwargs)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except BaseException:
        end_group(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` process on 127.0.0.1, started by the shipped
    cluster/mlflow-server.sh; yields its URI. Its whole process group (uvicorn
    workers, huey consumers) ends with the session, however the tests went."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_PORT": str(port), "MLFLOW_STORE": str(home / "store"),
           "PYTHON": sys.executable, "MLFLOW_WORKERS": "1"}
    env.pop("MLFLOW_HOST", None)                  # the script's default must be loopback
    with (home / "server.log").open("w") as log:
        proc = start_group(["bash", str(ROOT / "cluster" / "mlflow-server.sh")], env=env,
                           stdout=log, stderr=subprocess.STDOUT, cwd=home)
    try:
        uri = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, uri, home / "server.log")
        yield uri
    finally:
        end_group(proc)


def wait_until_healthy(proc: subprocess.Popen, uri: str, log: Path, what: str = "mlflow server",
                       timeout_s: float = 90) -> None:
    """Until `uri`/health answers 200; fails with the server's log if `proc` exits first."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{what} did not come up within {timeout_s:g} s")


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri(monkeypatch):
    """A sweep honours MLFLOW_TRACKING_URI (issue 14), and mlflow.set_tracking_uri() sets
    it in this process's environment (MLflow 3), which every later subprocess inherits:
    each test starts without it, so a sweep's store is the one its test expects."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ---------------------------------------------------------------- leak check


@pytest.fixture(scope="session", autouse=True)
def nothing_outlives_the_suite():
    """Fails the session if a process the tests started (tagged by SESSION_TAG
    or still below this process), or a socket listening in this process that
    was not there at the start, outlives the tests by LEAK_GRACE_S; ends them."""
    me = psutil.Process()
    listening_at_start = _listening(me)
    yield
    if "orchestrator.tasks.grading" in sys.modules:
        # This process's own math-verify helper, which atexit would end after this check.
        sys.modules["orchestrator.tasks.grading"].stop_helper()
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        leftovers = _started_by_tests(me)
        sockets = _listening(me) - listening_at_start
        if not (leftovers or sockets) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if leftovers or sockets:
        report = [_describe(p) for p in leftovers]
        report += [f"pytest itself still listens on {ip}:{port}" for ip, port in sorted(sockets)]
        _end(leftovers)
        pytest.fail(f"{len(report)} things the tests started outlived them by {LEAK_GRACE_S:.0f} s "
                    "(processes ended now): " + "; ".join(report) + ". A test or fixture must end "
                    "what it starts (orchestrator.processes.end_group, "
                    "tests/conftest.run_command).", pytrace=False)


def _started_by_tests(me: psutil.Process) -> list[psutil.Process]:
    tag = os.environ[SESSION_TAG]
    found = {p.pid: p for p in me.children(recursive=True)}
    for process in psutil.process_iter():
        if process.pid != me.pid and process.pid not in found:
            with contextlib.suppress(psutil.Error):     # another user's, or gone meanwhile
                if process.environ().get(SESSION_TAG, "").startswith(tag):
                    found[process.pid] = process
    return [p for p in found.values() if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE     # exited, not yet reaped
    except psutil.Error:
        return False


def _listening(process: psutil.Process) -> set[tuple[str, int]]:
    try:
        connections = process.net_connections(kind="inet")
    except psutil.Error:
        return set()
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


def _describe(process: psutil.Process) -> str:
    try:
        command = " ".join(process.cmdline())[:150]
    except psutil.Error:
        command = "?"
    ports = ", ".join(f"{ip}:{port}" for ip, port in sorted(_listening(process)))
    return f"pid {process.pid} `{command}`" + (f" listening on {ports}" if ports else "")


def _end(processes: list[psutil.Process]) -> None:
    # One by one, never by group: an orphan may still share pytest's own group.
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(processes, timeout=5)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=5)


def alive(pids) -> set[int]:
    """The pids that still run (zombies, which init here reaps late, count as ended)."""
    running = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.add(pid)
        except psutil.NoSuchProcess:
            pass
    return running
