"""Processes this project starts (servers, helpers) and ends again, whole.

A child runs in a session of its own, so its process group holds everything
it forks: `mlflow ui` forks uvicorn workers, a job runner and seven `huey`
consumers, and signalling only its first pid leaves those behind, reparented
to init, holding the port (MLflow 3.17). Ending a child therefore means:
SIGTERM to every process of its session, SIGKILL to what is left after a
short grace, and returning only when none is left.

The caller's side: `exit_on_signals` turns SIGTERM and SIGHUP into
`Terminated`, a KeyboardInterrupt, so the `finally` blocks that end children
run for them as they do for Ctrl-C; `exit_code` gives the conventional
128 + signal. A process killed with SIGKILL cannot end anything: its
children outlive it, and `ensure_port_free` then names what holds the port.

Linux reads process and socket tables from /proc; elsewhere group membership
comes from `killpg(pgid, 0)` and a port's holder is not named.
This module must not import ray, mlflow or torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

GRACE_S = 5.0            # mlflow ui (15 processes) took 3-4 s to stop on 2 busy cores
KILL_WAIT_S = 5.0        # after SIGKILL only the kernel's reaping is left
POLL_S = 0.05
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)   # SIGINT already raises KeyboardInterrupt
_PROC = Path("/proc")
_TCP_LISTEN = "0A"       # socket state in /proc/net/tcp


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PortInUse(ValueError):
    """The port a server should listen on is taken; the message names the holder."""


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def _raise_terminated(signum, frame):
    raise Terminated(signum)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """Within the block SIGTERM and SIGHUP raise `Terminated` (Python's default
    for them is to die without running `finally`); previous handlers return
    after. A signal this process was started with ignored stays ignored:
    `nohup` ignores SIGHUP, and a shell script's `cmd &` ignores SIGINT.
    Outside the main thread signals cannot be handled: a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in TERMINATING_SIGNALS}
    for signum, handler in previous.items():
        if handler != signal.SIG_IGN:
            signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            # None: a handler set outside Python, which cannot be put back.
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def start_group(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """Popen `command` in a new session: its pid is its session and group id,
    and the terminal's Ctrl-C reaches only the caller, which ends the group."""
    return subprocess.Popen(command, start_new_session=True, **popen_kwargs)


def run_in_group(command: list[str], **popen_kwargs) -> int:
    """Run `command` in a group of its own until it exits; the group ends with
    it, on Ctrl-C, SIGTERM, SIGHUP and on any error here. Returns the exit
    status (128 + signal if a signal ended it); a signal to this process
    propagates as KeyboardInterrupt or `Terminated` once the group is gone."""
    with exit_on_signals():
        process = start_group(command, **popen_kwargs)
        try:
            returncode = process.wait()
        finally:
            end_group(process)
    return 128 - returncode if returncode < 0 else returncode


def end_group(process: subprocess.Popen, grace_s: float = GRACE_S) -> None:
    """End every process of `process`'s session (see `start_group`): SIGTERM,
    then SIGKILL after `grace_s` (at once if 0 or on a second interrupt).
    Returns when none is left, or after KILL_WAIT_S more."""
    try:
        if grace_s > 0:
            _signal_session(process.pid, signal.SIGTERM)
            if _wait_until_gone(process, grace_s):
                return
    except KeyboardInterrupt:      # a second Ctrl-C or SIGTERM: no more grace
        _kill_session(process)
        raise
    _kill_session(process)


def _kill_session(process: subprocess.Popen) -> None:
    _signal_session(process.pid, signal.SIGKILL)
    _wait_until_gone(process, KILL_WAIT_S)


def _wait_until_gone(process: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        process.poll()             # without /proc a zombie leader still counts as a member
        if not session_members(process.pid):
            process.poll()         # it may have become one since: reap it
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def _signal_session(sid: int, signum: int) -> None:
    # killpg reaches the group; members that moved to a group of their own
    # (setpgid) stay in the session and are signalled one by one.
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signum)


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`; without /proc, [sid] while
    process group `sid` has any process at all."""
    if not _PROC.is_dir():
        try:
            os.killpg(sid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [sid]
    members = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(entry)
        if stat is not None and stat["session"] == sid and stat["state"] != "Z":
            members.append(int(entry.name))
    return members


def _read_stat(proc_dir: Path) -> dict | None:
    try:
        text = (proc_dir / "stat").read_text()
    except OSError:          # exited meanwhile
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = text[text.rindex(")") + 2:].split()
    return {"state": fields[0], "ppid": int(fields[1]), "pgrp": int(fields[2]),
            "session": int(fields[3])}


# ---------------------------------------------------------------- ports


def ensure_port_free(host: str, port: int) -> None:
    """Raise PortInUse, naming the holder where /proc shows it, if a server
    could not listen on host:port. An address that is not local is left for
    the server itself to report."""
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror:
        return
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As servers do: connections in TIME_WAIT from a server that just
        # stopped must not count as a holder; a listener still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return
            raise PortInUse(f"{host}:{port} is already in use{_describe_holders(port)}; "
                            "or choose another --port") from None


def _describe_holders(port: int) -> str:
    pids = listening_pids(port)
    if not pids:
        return f" (by a process this user cannot see; `sudo ss -ltnp 'sport = :{port}'` names it)"
    first = pids[0]
    more = f" and {len(pids) - 1} more" if len(pids) > 1 else ""
    groups = sorted({_pgrp(pid) for pid in pids} - {None})
    kills = " ".join(f"-{g}" for g in groups)
    return (f" by pid {first} ({_command_line(first)}){more}, process group "
            f"{', '.join(map(str, groups))}; if that is a server left running, "
            f"`kill -TERM -- {kills}` ends it with its helpers")


def listening_pids(port: int) -> list[int]:
    """Pids (of this user, visible in /proc) holding a TCP socket that listens on `port`."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    pids = []
    for entry in _PROC.iterdir() if _PROC.is_dir() else ():
        if entry.name.isdigit() and _holds_any(entry, inodes):
            pids.append(int(entry.name))
    return sorted(pids)


def _holds_any(proc_dir: Path, links: set[str]) -> bool:
    try:
        fds = list((proc_dir / "fd").iterdir())
    except OSError:          # another user's process, or it exited meanwhile
        return False
    for fd in fds:
        with contextlib.suppress(OSError):      # closed meanwhile
            if os.readlink(fd) in links:
                return True
    return False


def _pgrp(pid: int) -> int | None:
    stat = _read_stat(_PROC / str(pid))
    return stat["pgrp"] if stat else None


def _command_line(pid: int, limit: int = 120) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def owner_tag(pid: int | None = None) -> str:
    """`host:pid` of this process (or of `pid`, on this host), for records that must know
    whether their writer lives."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def owner_is_gone(tag: str) -> bool | None:
    """Whether the process an `owner_tag` names has ended: True or False for one on this
    host, None for another host's (or an unreadable tag), whose processes cannot be seen."""
    host, _, pid = tag.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)        # signal 0 only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:         # alive, another user's
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A process that has ended but not been reaped still answers signal 0. A Ray worker
    of a killed node is reparented to PID 1, and in a container whose PID 1 does not reap
    it stays a zombie for good: its attempt must still count as dead."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:                 # no /proc (macOS): signal 0's answer stands
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
