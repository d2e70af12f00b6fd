"""The content-addressed artifact store: how a stage runs at most once.

A stage's output lives at `<root>/<stage>/<key[:16]>/`. It is written into a
temporary folder beside it, which gets its `DONE` marker last and is then
renamed into place in one atomic step: the final folder exists only complete,
and anything else is an interrupted attempt, redone. That single mechanism
gives resume after preemption, de-duplication across sweeps sharing the store,
and safe retries (two writers racing on one key both finish; the first rename
wins, the loser's copy is dropped). Before computing, a process takes the key's
claim (`<key>.claim`, created with O_EXCL, naming host:pid and a nonce): a second sweep on the
same store waits for it and finds the stage done instead of computing it again.

A temporary folder records its owner (host, pid). A later sweep removes it
when that process is gone (same host) or, for another host's, when nothing in
it has changed for a week: a long GPU stage is never deleted under its feet.

Each finished folder holds `spec.json` (what ran: stage, key, params, inputs; when:
`started_at`/`ended_at`; with what: `provenance`, the code version, git commit and
library versions), `result.json` (the stage's typed result) and the stage's own files.

`cluster.artifacts` may also be an fsspec URL (`s3://bucket/prefix`, `gs://...`):
`open_store` then returns orchestrator.object_store's ObjectStore, which keeps these
guarantees without a rename (see there). `file://` URLs are plain folders.

This module is executor-agnostic: it must not import ray or mlflow.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config_schema import to_dict
from orchestrator.contract import StageResult
from orchestrator.files import is_disk_full
from orchestrator.processes import owner_is_gone, owner_tag
from orchestrator.provenance import provenance
from orchestrator.stages import STAGES

DONE = "DONE"
OWNER = ".owner.json"
SPEC = "spec.json"          # what ran: stage, key, id, params, inputs, times, provenance
RESULT = "result.json"      # the stage's typed result as JSON
MANIFEST = "manifest.json"  # every other file's bytes and sha256, written just before DONE
STALE_TMP_SECONDS = 7 * 24 * 3600     # another host's attempt, untouched this long, is dead
CLAIM_POLL_SECONDS = 1.0             # how often a waiting sweep looks again
CLAIM_BEAT_SECONDS = 30.0            # the holder touches its claim this often
CLAIM_LOST_SECONDS = 300.0           # another host's claim untouched this long: its holder died


@dataclass(frozen=True)
class Outcome:
    """What the runner gets back from one stage: its result and where it lives."""

    key: str
    stage: str
    artifact_dir: str
    result: StageResult   # the stage's typed result (its `wall_seconds`: the producing run's)
    cached: bool          # True: found finished, no work done now
    node: str             # host that did the work (or found it done)
    wall_seconds: float   # of this execution (0 when cached)
    pid: int = 0          # process that did the work (0 when cached)
    devices: str = ""     # CUDA_VISIBLE_DEVICES as that process saw it
    started_at: float = 0.0   # epoch seconds the producing run started (cached: that run's)
    ended_at: float = 0.0     # and ended: MLflow's start and end time of the stage's run
    attempt: int = 1      # 2 and up: earlier attempts died (worker killed, node lost)
    # The executor's id of the node (a Ray node id): hosts can run several nodes, and
    # every node of a local test cluster has the same host name. Empty when the driver
    # found the stage done (it was not submitted).
    node_id: str = ""


def open_store(root: str | Path, cache: str = ""):
    """The store at `root` (cluster.artifacts): a folder or `file://` URL is an
    ArtifactStore; any other fsspec URL an ObjectStore, which materialises artifacts
    under `cache` (cluster.artifact_cache; empty: its default)."""
    text = str(root)
    if text.startswith("file://"):
        return ArtifactStore(text[len("file://"):])
    if "://" not in text:
        return ArtifactStore(text)
    from orchestrator.object_store import ObjectStore

    return ObjectStore(text, cache)


class ArtifactStore:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    @property
    def local_root(self) -> Path:
        """The local folder artifacts are read from and written in (the store itself)."""
        return self.root

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:16]

    def local_dir(self, stage: str, key: str, model: bool = True) -> Path:
        """The finished artifact as a folder on this node (here: where it is stored, whole;
        `model=False`, the driver's "without the model" of an ObjectStore, costs nothing)."""
        return self.path(stage, key)

    def is_done(self, stage: str, key: str) -> bool:
        return (self.path(stage, key) / DONE).exists()

    def all_done(self, specs) -> bool:
        """Whether every stage of `specs` (StageSpecs) has a finished artifact."""
        return all(self.is_done(spec.stage, spec.key) for spec in specs)

    def load(self, stage: str, key: str, model: bool = True) -> Outcome:
        return load_outcome(self.path(stage, key), stage, key)

    def spec(self, stage: str, key: str) -> dict[str, Any]:
        """The finished artifact's spec.json ({} when unreadable: it only describes)."""
        try:
            found = json.loads((self.path(stage, key) / SPEC).read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def discard(self, stage: str, key: str) -> None:
        """Remove a finished artifact so that its stage runs again: first out of sight
        (one rename, so no reader sees half a folder), then from disk."""
        final = self.path(stage, key)
        gone = self.root / stage / f".discarded-{key[:16]}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, gone)
        except FileNotFoundError:
            return                        # discarded already (another sweep)
        shutil.rmtree(gone, ignore_errors=True)

    def new_tmp(self, stage: str, key: str) -> Path:
        tmp = self.root / stage / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        (tmp / OWNER).write_text(json.dumps({"owner": owner_tag()}))
        return tmp

    def commit(self, tmp: Path, stage: str, key: str, spec: dict[str, Any],
               result: dict[str, Any]) -> Path:
        """Publish `tmp` as the finished artifact of `key` (DONE, then one rename)."""
        (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
        (tmp / RESULT).write_text(json.dumps(result, indent=2, sort_keys=True))
        # Sizes and hashes of what is published, so a truncated or edited file is found
        # (orchestrator/verify.py) instead of trusted.
        (tmp / MANIFEST).write_text(json.dumps(manifest(tmp), indent=1, sort_keys=True))
        (tmp / DONE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")
        # The owner goes last: a worker killed while hashing a large model (--fail-fast's
        # ray.cancel(force=True), kill -9) left an ownerless folder, kept for a week as
        # possibly another host's live attempt, instead of one the next sweep removes.
        (tmp / OWNER).unlink(missing_ok=True)
        final = self.path(stage, key)
        try:
            os.rename(tmp, final)
        except OSError:
            if (final / DONE).exists():
                shutil.rmtree(tmp)            # a concurrent run finished first: keep theirs
                return final
            if not final.exists():
                raise
            # Left by a version of this store that renamed before writing DONE.
            shutil.rmtree(final)
            os.rename(tmp, final)
        return final

    @contextmanager
    def claimed(self, stage: str, key: str):
        """Yields whether this process may compute `key` (False: finished meanwhile),
        holding the key's claim, with its heartbeat, until the block ends."""
        held = claim(self, stage, key)
        if held is None:
            yield False
            return
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(held, stop), daemon=True)
        beat.start()
        try:
            yield True
        finally:
            stop.set()
            beat.join()
            held.unlink(missing_ok=True)

    def dead_attempts(self, stage: str, key: str) -> int:
        """Remove the temporary folders of earlier attempts at `key` whose process is gone
        (a worker killed mid-stage, which Ray then retries); returns how many there were."""
        return _remove_dead((self.root / stage).glob(f".tmp-{key[:16]}-*"))

    def clean_stale(self) -> int:
        """Remove temporary folders of attempts that are dead; returns how many."""
        if not self.root.exists():
            return 0
        removed = _remove_dead(self.root.glob("*/.tmp-*"))
        for claim_file in self.root.glob("*/*.claim"):
            removed += _take_over_if_dead(claim_file)
        return removed


def load_outcome(folder: Path, stage: str, key: str) -> Outcome:
    """The Outcome of the finished artifact in the local `folder` (found done: cached)."""
    record = json.loads((folder / RESULT).read_text())
    result = STAGES[stage].result_type(**record)
    try:
        spec = json.loads((folder / SPEC).read_text())
    except (OSError, ValueError):      # spec.json only describes
        spec = {}
    spec = spec if isinstance(spec, dict) else {}
    ended = spec.get("ended_at") or (folder / DONE).stat().st_mtime
    # Made before times were recorded: DONE was written as it ended.
    started = spec.get("started_at") or ended - result.wall_seconds
    return Outcome(key, stage, str(folder), result, True, socket.gethostname(), 0.0,
                   started_at=float(started), ended_at=float(ended))


def manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """relative path -> {"bytes", "sha256"} of every file in `folder` but DONE, the
    manifest itself and an attempt's owner record."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in (DONE, MANIFEST, OWNER):
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            entries[name] = {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}
    return entries


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (links not followed; files removed meanwhile skipped)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _remove_dead(attempts) -> int:
    """Remove the temporary folders among `attempts` whose attempt is dead; how many."""
    dead = [tmp for tmp in attempts if attempt_is_dead(tmp)]
    for tmp in dead:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(dead)


def attempt_is_dead(tmp: Path) -> bool:
    """Whether the attempt writing `tmp` is gone: its process on this host, or, for
    another host (whose processes we cannot see), no change for STALE_TMP_SECONDS."""
    try:
        owner = json.loads((tmp / OWNER).read_text())
    except (OSError, ValueError):
        owner = {}
    gone = owner_is_gone(str(owner.get("owner", "")))
    if gone is not None:
        return gone
    try:
        newest = max([tmp.stat().st_mtime] + [p.stat().st_mtime for p in tmp.rglob("*")])
    except OSError:                   # changing under us (or being removed): not dead
        return False
    return time.time() - newest > STALE_TMP_SECONDS


def _claim_is_dead(claim: Path, text: str | None = None) -> bool:
    """Whether the process that claimed a key is gone: on this host, by its pid; another
    host's (whose processes cannot be seen) once its heartbeat stopped CLAIM_LOST_SECONDS ago:
    a node lost mid-stage does not block Ray's retry on another node. `text`: the claim's
    content as already read (a claim is `host:pid nonce`)."""
    try:
        text = claim.read_text() if text is None else text
        age = time.time() - claim.stat().st_mtime
    except OSError:                   # released meanwhile: try again
        return False
    gone = owner_is_gone(text.split(" ")[0].strip())
    return gone if gone is not None else age > CLAIM_LOST_SECONDS


def _take_over_if_dead(path: Path) -> bool:
    """Remove `path` if its holder is dead. Two waiters may judge the same dead claim at
    once, and the slower one must not remove the claim the faster one has made since:
    the claim is moved aside atomically, and put back unless it is the one judged dead
    (every claim holds a nonce, so a new claim never reads like the old one). Whether
    the dead claim is gone."""
    try:
        judged = path.read_text()
    except OSError:
        return False
    if not _claim_is_dead(path, judged):
        return False
    grave = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.dead")
    try:
        os.rename(path, grave)
    except FileNotFoundError:         # another waiter took it over first
        return True
    try:
        if grave.read_text() != judged:
            os.link(grave, path)      # a live claim made meanwhile: back, same inode
            return False
    except FileExistsError:           # a third waiter claimed meanwhile: theirs stands
        return False
    finally:
        grave.unlink(missing_ok=True)
    return True


def claim(store: ArtifactStore, stage: str, key: str) -> Path | None:
    """Wait for the right to compute `key` (an O_EXCL `<key>.claim` file naming this
    process): the claim's path, or None when another process finished `key` meanwhile.
    A dead owner's claim is taken over. Two sweeps sharing a store thus compute a stage
    once: the second waits and finds it done."""
    path = store.root / stage / f"{key[:16]}.claim"
    path.parent.mkdir(parents=True, exist_ok=True)
    while not store.is_done(stage, key):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _take_over_if_dead(path):
                time.sleep(CLAIM_POLL_SECONDS)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{owner_tag()} {uuid.uuid4().hex}")
        return path
    return None


def run_cached(store: ArtifactStore, spec, input_dirs: dict[str, str]) -> Outcome:
    """Run `spec` unless its artifact is done; the one place a stage function is called.
    `store`: an ArtifactStore or an ObjectStore (the same interface)."""
    with store.claimed(spec.stage, spec.key) as held:
        # Published by another process while this one waited, or between check and claim.
        if not held or store.is_done(spec.stage, spec.key):
            return store.load(spec.stage, spec.key)
        return _compute(store, spec, input_dirs)


def _heartbeat(claim_file: Path, stop: threading.Event) -> None:
    """Touch the claim while its stage runs, so another host can tell it is alive."""
    while not stop.wait(CLAIM_BEAT_SECONDS):
        try:
            os.utime(claim_file)
        except OSError:               # removed by someone who judged it dead: nothing to do
            return


def _compute(store: ArtifactStore, spec, input_dirs: dict[str, str]) -> Outcome:
    tmp = store.new_tmp(spec.stage, spec.key)
    start = time.time()
    try:
        result = STAGES[spec.stage].run(spec.params, {k: Path(v) for k, v in input_dirs.items()}, tmp)
        end = time.time()
        wall = end - start
        result = dataclasses.replace(result, wall_seconds=round(wall, 3))
        description = {"stage": spec.stage, "key": spec.key, "id": spec.id,
                       "params": to_dict(spec.params), "inputs": dict(spec.inputs),
                       "started_at": start, "ended_at": end, "provenance": provenance()}
        final = store.commit(tmp, spec.stage, spec.key, description, to_dict(result))
    except BaseException as exc:
        written = folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)      # nothing half-written is published
        if is_disk_full(exc):
            local = store.local_root
            raise OSError(errno.ENOSPC, f"{local}: disk full while {spec.id} was writing "
                          f"its artifact ({written:,} bytes written, {free_bytes(local):,} "
                          f"free now): it needs more than {written:,} bytes; free space there or "
                          "point cluster.artifacts elsewhere") from exc
        raise
    return Outcome(spec.key, spec.stage, str(final), result, False, socket.gethostname(), wall,
                   os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                   started_at=start, ended_at=end)
