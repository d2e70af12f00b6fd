"""Stage artifacts on object storage: `cluster.artifacts: s3://bucket/prefix` (or gs://, any
fsspec URL), with the guarantees of orchestrator/store.py's folders.

Object stores have no atomic rename, so an artifact is published by a pointer written
last. A stage computes into a local scratch folder (under the node's artifact cache),
uploads every file to `<url>/<stage>/<key[:16]>/attempts/<attempt>/`, and only then
writes `<url>/<stage>/<key[:16]>/DONE`: a small JSON naming that attempt, when, and its
manifest (bytes and sha256 of every file). One PUT is atomic: a reader sees no DONE or a
whole one. Readers trust only DONE and read exactly the attempt it names, so two writers
racing on one key each upload a complete attempt and DONE names one of them, never a mix.
A writer that finds a DONE when its upload ends keeps theirs (as the folder store does).
Attempts that no DONE names are what killed writers, or the loser of a race, left:
`clean_stale` removes those older than STALE_ATTEMPT_SECONDS (never a live upload).

There are no claims here (no O_EXCL on an object store): two sweeps that reach one stage
at the same moment may both compute it. Results stay correct (both computed the same
inputs; one attempt is published); only the cost is doubled.

Stages and the driver read artifacts as local folders: `local_dir` downloads a finished
artifact into the node's cache, `<cache>/<stage>/<key[:16]>/` (cluster.artifact_cache),
through a temporary folder whose files are checked against DONE's sha256 and which is
then renamed into place. A file that does not match is an error naming it, never used.
The cached folder holds a copy of DONE and is reused while the store's DONE is the same.

The driver never loads a model: it reads spec.json, result.json and a stage's records
(predictions.jsonl, rollouts.jsonl, ...). So it asks for `local_dir(..., model=False)`,
which leaves out every file under the artifact's `model/` folder (Files.MODEL: the saved
weights, tokenizer and config of base_model, sft and dpo; 14 GB for a 7B model) and keeps
the rest, checked as above. Such a partial copy lives in a folder of its own,
`<cache>/<stage>/<key[:16]>.meta/`, never where a full copy goes, so a worker on the
driver's node that needs the model downloads it whole; a full copy already there serves
the driver too. An artifact with no `model/` folder is fetched whole either way, into the
full copy's place. Each copy's manifest.json lists the files it holds.

Credentials and endpoints come from the protocol's own environment (s3://:
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL), never from the config, so
nothing secret reaches spec.json, MLflow or a log.

Must not import ray or mlflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.config_schema import ConfigError
from orchestrator.contract import Files
from orchestrator.store import (
    DONE,
    MANIFEST,
    OWNER,
    RESULT,
    SPEC,
    ArtifactStore,
    Outcome,
    load_outcome,
    manifest,
)

ATTEMPTS = "attempts"
STALE_ATTEMPT_SECONDS = 24 * 3600    # an unpublished attempt this old is a dead writer's
PARTIAL = ".meta"      # suffix of a cached copy without the model (the driver's)
CACHE_ENV = "SYNTHSCALE_ARTIFACT_CACHE"
# The pip extra that brings a protocol's fsspec implementation.
EXTRAS = {"s3": "s3", "s3a": "s3"}


class CorruptArtifact(OSError):
    """A published file that does not match DONE's manifest (an OSError, so that a sweep
    that meets one ends with its one line, exit 1)."""


def is_model_file(name: str) -> bool:
    """Whether the artifact file `name` (a manifest name) is part of the stage's saved model,
    which the driver's copy leaves out."""
    return name.split("/", 1)[0] == Files.MODEL


def default_cache(url: str) -> Path:
    """Where a node keeps the artifacts of the store at `url` when cluster.artifact_cache is
    empty: $SYNTHSCALE_ARTIFACT_CACHE, else ~/.cache/synthscale/artifacts/<hash of url>."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path("~/.cache/synthscale/artifacts").expanduser() / digest


def filesystem(url: str):
    """(fsspec filesystem, path without the protocol) of `url`; a protocol whose package is
    missing is a ConfigError naming cluster.artifacts and the extra to install."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        # Listings are not cached: another writer's DONE must be seen at once.
        fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False, skip_instance_cache=True)
    except (ImportError, ValueError) as exc:
        extra = EXTRAS.get(protocol)
        hint = f"pip install 'synthscale[{extra}]'" if extra else "install its fsspec package"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cluster.artifacts={url}: {protocol}:// cannot be opened ({first}); "
                          f"{hint}") from None
    return fs, path.rstrip("/")


class ObjectStore:
    """ArtifactStore's interface on an fsspec URL (see the module docstring)."""

    def __init__(self, url: str, cache: str | Path = ""):
        self.url = url.rstrip("/")
        self.root = self.url                # what the runner hands its workers
        self.fs, self.base = filesystem(self.url)
        self.cache = Path(cache).expanduser().resolve() if cache else default_cache(self.url)
        self._scratch = ArtifactStore(self.cache)   # local attempts and materialised folders

    @property
    def local_root(self) -> Path:
        return self.cache

    def _remote(self, stage: str, key: str, *parts: str) -> str:
        return "/".join([self.base, stage, key[:16], *parts])

    def _shown(self, path: str) -> str:
        """`path` as a URL, for messages."""
        return f"{self.url}{path[len(self.base):]}"

    def path(self, stage: str, key: str) -> Path:
        """The local cache folder of `key` (materialised or not: see local_dir)."""
        return self._scratch.path(stage, key)

    def partial_path(self, stage: str, key: str) -> Path:
        """The local cache folder of `key` without its model (see the module docstring)."""
        full = self.path(stage, key)
        return full.with_name(full.name + PARTIAL)

    def is_done(self, stage: str, key: str) -> bool:
        return self.fs.exists(self._remote(stage, key, DONE))

    def all_done(self, specs) -> bool:
        return all(self.is_done(spec.stage, spec.key) for spec in specs)

    def _done_text(self, stage: str, key: str) -> str | None:
        try:
            return self.fs.cat_file(self._remote(stage, key, DONE)).decode()
        except FileNotFoundError:
            return None

    def _done(self, stage: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """(DONE's text, its record) of a published key; None when not published."""
        text = self._done_text(stage, key)
        if text is None:
            return None
        try:
            record = json.loads(text)
            record["attempt"], record["manifest"]          # noqa: B018 - both must be there
        except (ValueError, KeyError, TypeError):
            raise CorruptArtifact(f"{self._shown(self._remote(stage, key, DONE))}: not a DONE "
                                  "record this store wrote; delete it to compute the stage "
                                  "again") from None
        return text, record

    def spec(self, stage: str, key: str) -> dict[str, Any]:
        """The finished artifact's spec.json, read without downloading the artifact
        ({} when unreadable: it only describes)."""
        try:
            done = self._done(stage, key)
            if done is None:
                return {}
            found = json.loads(self.fs.cat_file(self._remote(stage, key, ATTEMPTS,
                                                             done[1]["attempt"], SPEC)))
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def load(self, stage: str, key: str, model: bool = True) -> Outcome:
        return load_outcome(self.local_dir(stage, key, model), stage, key)

    def local_dir(self, stage: str, key: str, model: bool = True) -> Path:
        """The finished artifact as a folder on this node: the cached copy while it holds
        the store's DONE, else downloaded and checked now. `model=False` (the driver): the
        files under `model/` may be left out (a full copy, if cached, is returned)."""
        done = self._done(stage, key)
        if done is None:
            raise FileNotFoundError(f"{self._shown(self._remote(stage, key))}: not finished "
                                    f"(no {DONE})")
        partial = not model and any(is_model_file(name) for name in done[1]["manifest"])
        copies = [self.path(stage, key)] + ([self.partial_path(stage, key)] if partial else [])
        for folder in copies:
            try:
                if (folder / DONE).read_text() == done[0]:
                    return folder
            except OSError:
                pass
        return self._download(stage, key, *done, copies[-1])

    def _download(self, stage: str, key: str, text: str, record: dict[str, Any],
                  final: Path) -> Path:
        """Download DONE's attempt into the cached copy `final`: the whole artifact, or
        without the model when `final` is the partial copy."""
        tmp = self._scratch.new_tmp(stage, key)
        try:
            prefix = self._remote(stage, key, ATTEMPTS, record["attempt"])
            names = sorted(record["manifest"])
            # DONE is read from a shared bucket: its names never reach outside the folder.
            outside = [n for n in names if Path(n).is_absolute() or ".." in Path(n).parts]
            if outside or "/" in record["attempt"] or record["attempt"] in ("", ".", ".."):
                raise CorruptArtifact(f"{self._shown(self._remote(stage, key, DONE))}: names "
                                      f"{(outside or [record['attempt']])[0]!r}, outside its "
                                      "artifact; not used")
            if final != self.path(stage, key):
                names = [n for n in names if not is_model_file(n)]
            listed = {n: record["manifest"][n] for n in names}
            for name in names:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get([f"{prefix}/{n}" for n in names], [str(tmp / n) for n in names])
            except FileNotFoundError as exc:
                raise CorruptArtifact(f"{prefix}: a file DONE lists is missing ({exc}); delete "
                                      f"{self._shown(self._remote(stage, key, DONE))} to "
                                      "compute the stage again") from None
            self._check(tmp, listed, prefix, stage, key)
            return self._settle(tmp, final, text, listed)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _check(self, folder: Path, listed: dict, prefix: str, stage: str, key: str) -> None:
        """Every downloaded file as DONE's manifest lists it, else a CorruptArtifact."""
        found = manifest(folder)
        for name, entry in sorted(listed.items()):
            got = found.get(name, {"bytes": 0, "sha256": "missing"})
            if got["sha256"] != entry["sha256"]:
                raise CorruptArtifact(
                    f"{self._shown(prefix)}/{name}: sha256 {got['sha256'][:12]} ({got['bytes']} "
                    f"bytes) is not the published {entry['sha256'][:12]} ({entry['bytes']} "
                    "bytes): the stored artifact was altered or damaged and is not used; "
                    f"delete {self._shown(self._remote(stage, key, DONE))} to compute the "
                    "stage again")

    def _settle(self, tmp: Path, final: Path, text: str, listed: dict) -> Path:
        """Make the checked folder `tmp` the cached copy `final` (one local rename);
        `listed`: the files it holds."""
        (tmp / MANIFEST).write_text(json.dumps(listed, indent=1, sort_keys=True))
        (tmp / DONE).write_text(text)
        (tmp / OWNER).unlink(missing_ok=True)
        for _ in range(3):
            try:
                os.rename(tmp, final)
                return final
            except OSError:
                pass
            try:
                if (final / DONE).read_text() == text:   # another process here was quicker
                    return final
            except OSError:
                pass
            # An older publication of this key (discarded and computed again since).
            aside = final.with_name(f".stale-{final.name}-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(tmp, final)
        return final

    def discard(self, stage: str, key: str) -> None:
        """Unpublish `key` (DONE first: from then on no reader trusts it), then delete the
        attempt DONE named and the cached copies."""
        done = self._done(stage, key)
        if done is None:
            return
        try:
            self.fs.rm_file(self._remote(stage, key, DONE))
            self.fs.rm(self._remote(stage, key, ATTEMPTS, done[1]["attempt"]), recursive=True)
        except FileNotFoundError:
            pass                              # discarded already (another sweep)
        self._scratch.discard(stage, key)
        partial = self.partial_path(stage, key)
        aside = partial.with_name(f".discarded-{partial.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(partial, aside)         # out of sight first, as the folder store does
        except FileNotFoundError:
            return
        shutil.rmtree(aside, ignore_errors=True)

    def new_tmp(self, stage: str, key: str) -> Path:
        """A local scratch folder for computing `key` (owned, like the folder store's)."""
        return self._scratch.new_tmp(stage, key)

    def commit(self, tmp: Path, stage: str, key: str, spec: dict[str, Any],
               result: dict[str, Any]) -> Path:
        """Upload `tmp` as an attempt at `key`, then point DONE at it; returns the cached
        local folder. A DONE found before or after the upload is kept (theirs)."""
        (tmp / SPEC).write_text(json.dumps(spec, indent=2, sort_keys=True))
        (tmp / RESULT).write_text(json.dumps(result, indent=2, sort_keys=True))
        listed = manifest(tmp)
        if self.is_done(stage, key):
            shutil.rmtree(tmp, ignore_errors=True)
            return self.local_dir(stage, key)
        attempt = f"{int(time.time())}-{uuid.uuid4().hex[:12]}"
        prefix = self._remote(stage, key, ATTEMPTS, attempt)
        names = sorted(listed)
        self.fs.put([str(tmp / n) for n in names], [f"{prefix}/{n}" for n in names])
        if self.is_done(stage, key):            # a concurrent writer published meanwhile
            self.fs.rm(prefix, recursive=True)
            shutil.rmtree(tmp, ignore_errors=True)
            return self.local_dir(stage, key)
        text = json.dumps({"attempt": attempt, "written_at": time.time(), "manifest": listed},
                          sort_keys=True)
        self.fs.pipe_file(self._remote(stage, key, DONE), text.encode())
        try:
            return self._settle(tmp, self.path(stage, key), text, listed)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def claimed(self, stage: str, key: str):
        """No claims on an object store (the module docstring says why): always True."""
        yield True

    def dead_attempts(self, stage: str, key: str) -> int:
        """Remove the local scratch folders of earlier attempts on this node whose process
        is gone (a worker killed mid-stage); returns how many there were."""
        return self._scratch.dead_attempts(stage, key)

    def clean_stale(self, older_than: float = STALE_ATTEMPT_SECONDS) -> int:
        """Remove dead local scratch folders, and the uploaded attempts that no DONE names
        and that started more than `older_than` seconds ago; returns how many."""
        removed = self._scratch.clean_stale()
        for (stage, short), attempts in self._attempts().items():
            try:
                done = self._done(stage, short)
            except CorruptArtifact:           # which attempt it meant is unknown: keep all
                continue
            named = done[1]["attempt"] if done else None
            for attempt in attempts - {named}:
                started = attempt.split("-", 1)[0]
                if started.isdigit() and time.time() - int(started) > older_than:
                    self.fs.rm(self._remote(stage, short, ATTEMPTS, attempt), recursive=True)
                    removed += 1
        return removed

    def _attempts(self) -> dict[tuple[str, str], set[str]]:
        """(stage, key[:16]) -> the attempt ids uploaded under it."""
        try:
            paths = self.fs.find(self.base)
        except FileNotFoundError:
            return {}
        found: dict[tuple[str, str], set[str]] = {}
        for path in paths:
            parts = path[len(self.base):].strip("/").split("/")
            if len(parts) >= 4 and parts[2] == ATTEMPTS:
                found.setdefault((parts[0], parts[1]), set()).add(parts[3])
        return found
