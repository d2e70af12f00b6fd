"""The artifact store: atomic publication, racing commits, cleaning dead attempts."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from orchestrator import store as store_module
from orchestrator.store import DONE, OWNER, ArtifactStore

KEY = "ab" * 32


def result(loss: float) -> dict:
    """result.json of an `sft` stage (a TrainResult)."""
    return {"examples": 1, "steps": 1, "final_loss": loss, "device": "cpu", "train_tokens": 7}


def attempt(store, payload: str):
    tmp = store.new_tmp("sft", KEY)
    (tmp / "out.txt").write_text(payload)
    return tmp


def test_commit_publishes_a_complete_folder(tmp_path):
    store = ArtifactStore(tmp_path)
    tmp = attempt(store, "first")
    assert not store.is_done("sft", KEY)
    final = store.commit(tmp, "sft", KEY, {"stage": "sft"}, result(1.0))
    assert store.is_done("sft", KEY) and not tmp.exists()
    assert sorted(p.name for p in final.iterdir()) == [DONE, "manifest.json", "out.txt",
                                                       "result.json", "spec.json"]
    listed = json.loads((final / "manifest.json").read_text())
    assert sorted(listed) == ["out.txt", "result.json", "spec.json"]
    assert listed["out.txt"]["bytes"] == len("first")
    loaded = store.load("sft", KEY).result
    assert loaded.final_loss == 1.0 and loaded.train_tokens == 7 and loaded.wall_seconds == 0.0


def test_racing_commits_keep_the_first_and_drop_the_second(tmp_path):
    store = ArtifactStore(tmp_path)
    first, second = attempt(store, "first"), attempt(store, "second")
    store.commit(first, "sft", KEY, {}, result(1.0))
    final = store.commit(second, "sft", KEY, {}, result(2.0))
    assert (final / "out.txt").read_text() == "first" and not second.exists()
    assert store.load("sft", KEY).result.final_loss == 1.0


def test_a_final_folder_without_done_is_replaced(tmp_path):
    store = ArtifactStore(tmp_path)
    broken = store.path("sft", KEY)
    broken.mkdir(parents=True)
    (broken / "out.txt").write_text("half")
    final = store.commit(attempt(store, "whole"), "sft", KEY, {}, {})
    assert (final / "out.txt").read_text() == "whole" and (final / DONE).exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_clean_stale_removes_only_dead_attempts(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    mine = attempt(store, "running here")                       # this process: alive
    dead = attempt(store, "crashed here")
    host = socket.gethostname()
    (dead / OWNER).write_text(json.dumps({"owner": f"{host}:{dead_pid()}"}))
    (mine / OWNER).write_text(json.dumps({"owner": f"{host}:{os.getpid()}"}))
    elsewhere_busy = attempt(store, "long GPU stage on another node")
    elsewhere_dead = attempt(store, "preempted node")
    for tmp in (elsewhere_busy, elsewhere_dead):
        (tmp / OWNER).write_text(json.dumps({"owner": "gpu-node-7:1234"}))
    week_ago = time.time() - store_module.STALE_TMP_SECONDS - 60
    for path in [elsewhere_dead, *elsewhere_dead.rglob("*")]:
        os.utime(path, (week_ago, week_ago))
    assert store.clean_stale() == 2
    assert mine.exists() and elsewhere_busy.exists()
    assert not dead.exists() and not elsewhere_dead.exists()


def test_an_attempt_killed_while_hashing_its_files_is_dead_to_the_next_sweep(tmp_path):
    # --fail-fast's ray.cancel(force=True), or kill -9, can land while commit hashes a large
    # model: the folder must still name its (now dead) owner, or it is kept for a week.
    code = ("import os, signal, sys; from orchestrator import store as s; "
            "store = s.ArtifactStore(sys.argv[1]); tmp = store.new_tmp('sft', sys.argv[2]); "
            "(tmp / 'out.txt').write_text('weights'); "
            "s.manifest = lambda folder: os.kill(os.getpid(), signal.SIGKILL); "
            "store.commit(tmp, 'sft', sys.argv[2], {}, {})")
    child = subprocess.run([sys.executable, "-c", code, str(tmp_path), KEY],
                           cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == -signal.SIGKILL
    (left,) = (tmp_path / "sft").glob(".tmp-*")
    assert (left / "result.json").exists()            # it died inside commit, unpublished
    store = ArtifactStore(tmp_path)
    assert store.clean_stale() == 1 and not left.exists() and not store.is_done("sft", KEY)


def test_an_outcome_carries_the_producing_runs_start_and_end(tmp_path):
    """run_cached times the stage; a cached outcome has the times of the run that made it
    (spec.json), and an artifact made before times were recorded is dated by DONE."""
    from orchestrator.config import config_from_dict
    from orchestrator.planning import expand_grid
    from orchestrator.store import SPEC, run_cached

    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    spec = next(s for s in plan.specs if s.stage == "teacher_generate")
    store = ArtifactStore(tmp_path)
    before = time.time()
    fresh = run_cached(store, spec, {})
    assert before <= fresh.started_at <= fresh.ended_at <= time.time()
    cached = run_cached(store, spec, {})
    assert cached.cached and (cached.started_at, cached.ended_at) == (fresh.started_at,
                                                                      fresh.ended_at)
    folder = store.path(spec.stage, spec.key)
    written = json.loads((folder / SPEC).read_text())
    for name in ("started_at", "ended_at"):
        del written[name]
    (folder / SPEC).write_text(json.dumps(written))
    os.utime(folder / DONE, (before - 100, before - 100))
    legacy = store.load(spec.stage, spec.key)
    assert legacy.ended_at == before - 100
    assert legacy.started_at == before - 100 - legacy.result.wall_seconds


def test_a_claim_makes_a_second_process_wait_and_find_the_stage_done(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CLAIM_POLL_SECONDS", 0.05)
    store = ArtifactStore(tmp_path)
    held = store_module.claim(store, "sft", KEY)
    assert held is not None and held.read_text().startswith(f"{socket.gethostname()}:{os.getpid()} ")
    # this process is alive, so a second claimer waits; the stage's publication frees it
    store.commit(attempt(store, "first"), "sft", KEY, {}, result(1.0))
    assert store_module.claim(store, "sft", KEY) is None
    held.unlink()


def _dead_owner() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid} nonce"


def test_a_dead_claim_is_taken_over_once_when_two_waiters_judge_it_together(tmp_path,
                                                                          monkeypatch):
    """Waiter B judges the dead claim dead; before B removes it, waiter A takes it over and
    claims the key. B must leave A's claim in place and keep waiting (it used to delete it
    and claim too: both computed the stage)."""
    monkeypatch.setattr(store_module, "CLAIM_POLL_SECONDS", 0.05)
    store = ArtifactStore(tmp_path)
    path = tmp_path / "sft" / f"{KEY[:16]}.claim"
    path.parent.mkdir(parents=True)
    path.write_text(_dead_owner())
    judge = store_module._claim_is_dead
    taken: list = []

    def slow_judge(claim_file, text=None):      # B's verdict; A acts before B goes on
        dead = judge(claim_file, text)
        if dead and not taken:
            taken.append(None)
            taken[0] = store_module.claim(store, "sft", KEY)      # A
        return dead

    monkeypatch.setattr(store_module, "_claim_is_dead", slow_judge)
    waiter_b = threading.Thread(target=lambda: taken.append(store_module.claim(store, "sft", KEY)))
    waiter_b.start()
    time.sleep(0.5)
    a_claim = taken[0]
    assert a_claim == path and path.read_text().startswith(f"{socket.gethostname()}:{os.getpid()} ")
    assert waiter_b.is_alive() and len(taken) == 1, "B claimed the key A holds"
    store.commit(attempt(store, "A"), "sft", KEY, {}, result(1.0))     # A publishes
    path.unlink()
    waiter_b.join(timeout=5)
    assert taken[1] is None                     # B finds the stage done: computed once
    assert not list(path.parent.glob("*.dead"))


def test_another_hosts_claim_is_alive_while_its_holder_beats(tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "CLAIM_BEAT_SECONDS", 0.1)
    claim_file = tmp_path / "k.claim"
    claim_file.write_text("a-host-that-is-not-this-one:123")
    old = time.time() - store_module.CLAIM_LOST_SECONDS - 10
    os.utime(claim_file, (old, old))
    assert store_module._claim_is_dead(claim_file)
    stop = threading.Event()
    beat = threading.Thread(target=store_module._heartbeat, args=(claim_file, stop))
    beat.start()
    time.sleep(0.4)
    stop.set()
    beat.join()
    assert not store_module._claim_is_dead(claim_file)
