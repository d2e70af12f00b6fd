"""The reaper: ends a sweep's MLflow runs when its driver is killed outright (issue 12).

A driver killed with SIGKILL runs no `finally`: its parent run, and a stage run it was
logging, stayed RUNNING until the next attempt of the sweep, or forever for a user who
never re-runs it. `start` (called by run_sweep once the tracker is open) starts this
module as a process in a session of its own, so the driver's SIGKILL and the terminal's
Ctrl-C do not reach it. It polls whether the driver lives; once it is gone, it ends what
the driver left RUNNING (tracking.end_runs_of_dead_driver) and exits. A sweep that ends
normally sets its own statuses, then ends the reaper with processes.end_group: SIGTERM
at its default action, which exits touching nothing.

While it waits it holds only psutil: mlflow is imported once the driver has died.
The tracking URI (which may hold a password) comes in MLFLOW_TRACKING_URI, never argv.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from orchestrator.processes import owner_tag, start_group

POLL_S = 1.0
# After the driver died: with Tracker's HTTP limits one request to a dead server takes
# over 120 s; a reaper must never linger (tests/conftest.py's leak check), so SIGALRM's
# default action ends it after this long whatever it is waiting for.
REAP_LIMIT_S = 60
SAME_START_S = 1.0   # create_time is in clock ticks; a reused pid starts seconds apart at least


def start(uri: str, experiment_id: str, parent_id: str, log: Path,
          driver: int | None = None) -> subprocess.Popen:
    """A reaper for the sweep's parent run `parent_id`, watching its driver: this process,
    or the process `driver` (a test's stand-in)."""
    watched = psutil.Process(driver)
    command = [sys.executable, "-m", "orchestrator.reaper", "--pid", str(watched.pid),
               "--started", repr(watched.create_time()),
               "--experiment-id", experiment_id, "--parent-run", parent_id]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    with log.open("a") as out:
        return start_group(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                           stderr=subprocess.STDOUT)


def driver_alive(pid: int, started: float) -> bool:
    """Whether process `pid`, started at `started`, still runs (a zombie has ended; a
    process that got its pid since started later)."""
    try:
        process = psutil.Process(pid)
        return (abs(process.create_time() - started) < SAME_START_S
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestrator.reaper",
                                     description="End a killed sweep driver's MLflow runs.")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--started", type=float, required=True, help="the driver's create_time")
    parser.add_argument("--experiment-id", required=True)
    parser.add_argument("--parent-run", required=True)
    args = parser.parse_args(argv)
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        print("reaper: MLFLOW_TRACKING_URI is not set; nothing to watch for", flush=True)
        return 2
    while driver_alive(args.pid, args.started):
        time.sleep(POLL_S)
    signal.alarm(REAP_LIMIT_S)
    from orchestrator.tracking import end_runs_of_dead_driver

    owner = owner_tag(args.pid)        # as the driver tagged its runs: the same host
    ended = end_runs_of_dead_driver(uri, args.experiment_id, args.parent_run, owner)
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} reaper: driver {owner} died; "
          f"ended {ended} run(s) it left RUNNING", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
