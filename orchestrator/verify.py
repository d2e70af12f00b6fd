"""Checking an artifact store (`synthscale verify STORE`, and a sweep before it trusts a
cached stage): a finished folder is trusted only when it is whole and as published.

Findings per entry of `<store>/<stage>/`: a folder without DONE (an interrupted attempt);
a DONE beside a missing, truncated or edited file (manifest.json: bytes, and with `deep`
sha256), or a result.json / spec.json that does not parse or does not fit the stage's
result type (written by another code version); a spec.json naming another key; a file or
folder the store never writes (foreign); an unknown stage folder. Temporary folders and
claims of running or dead attempts are reported as leftovers, not damage. The response cache
(`<store>/_responses/`, see backends/responses.py) is the store's own and not checked: its
records are hashed by request, and a torn last line is skipped when read.

Must not import ray or mlflow.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from orchestrator.contract import RESPONSES
from orchestrator.stages import STAGES
from orchestrator.store import DONE, MANIFEST, RESULT, SPEC, ArtifactStore, manifest

FINAL = re.compile(r"^[0-9a-f]{16}$")
LEFTOVER = re.compile(r"^(\.tmp-[0-9a-f]{16}-[0-9a-f]{8}|\.broken-[0-9a-f]{16}-[0-9a-f]{8}|"
                      r"[0-9a-f]{16}\.claim)$")

NO_MANIFEST = (f"no readable {MANIFEST} (published before manifests, or it was damaged): "
               "its files are not proven whole")


@dataclass(frozen=True)
class Finding:
    path: Path
    problem: str
    damage: bool       # False: a leftover the next sweep or gc handles, or a folder from
                       # before manifests (trusted once its results parse)

    def __str__(self) -> str:
        label = "BROKEN" if self.damage else "unproven" if self.problem == NO_MANIFEST else "leftover"
        return f"{label} {self.path}: {self.problem}"


def check_folder(folder: Path, stage: str, deep: bool = False) -> str:
    """What is wrong with one finished-looking folder: "" when it can be trusted."""
    if not (folder / DONE).exists():
        return "no DONE marker: an interrupted attempt, recomputed by the next sweep"
    try:
        spec = json.loads((folder / SPEC).read_text())
        STAGES[stage].result_type(**json.loads((folder / RESULT).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        return f"{SPEC}/{RESULT} unreadable or not this code's result type ({exc})"[:300]
    if not str(spec.get("key", "")).startswith(folder.name) or spec.get("stage") != stage:
        return f"{SPEC} names {spec.get('stage')}/{str(spec.get('key'))[:16]}, not this folder"
    return _check_manifest(folder, deep)


def _check_manifest(folder: Path, deep: bool) -> str:
    try:
        listed = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return NO_MANIFEST
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {entry['bytes']} were published"
    if deep:
        actual = manifest(folder)
        changed = sorted(n for n in listed if actual.get(n, {}).get("sha256") != listed[n]["sha256"])
        if changed:
            return f"{changed[0]} was changed after it was published (sha256 differs)"
    return ""


def verify_store(root: Path, deep: bool = True) -> tuple[int, list[Finding]]:
    """(finished folders checked, findings) for a whole store."""
    findings, checked = [], 0
    for entry in sorted(Path(root).iterdir()):
        if entry.name == RESPONSES and entry.is_dir():
            continue
        if entry.name not in STAGES or not entry.is_dir():
            findings.append(Finding(entry, "not a stage folder of this code (foreign)", True))
            continue
        for item in sorted(entry.iterdir()):
            if LEFTOVER.match(item.name):
                findings.append(Finding(item, "an attempt's temporary folder or claim", False))
            elif FINAL.match(item.name) and item.is_dir():
                checked += 1
                problem = check_folder(item, entry.name, deep)
                if problem:
                    findings.append(Finding(item, problem, problem != NO_MANIFEST))
            else:
                findings.append(Finding(item, "not written by this store (foreign)", True))
    return checked, findings


def check_cached(store_root: Path, specs, stream) -> int:
    """Before a sweep trusts its cached stages: each broken one (sizes against its manifest,
    results parsed) is set aside, with a line saying so, and computed again. A folder from
    before manifests is trusted after its results parse, and counted in one line. Returns
    how many were set aside."""
    store = ArtifactStore(store_root)
    set_aside_count, unproven = 0, 0
    for spec in specs:
        folder = store.path(spec.stage, spec.key)
        if not (folder / DONE).exists():
            continue
        problem = check_folder(folder, spec.stage)
        if problem == NO_MANIFEST:
            unproven += 1
        elif problem:
            aside = set_aside(folder)
            set_aside_count += 1
            stream.write(f"corrupt cache: {folder}: {problem}; moved to {aside.name}, "
                         f"{spec.id} is computed again\n")
    if unproven:
        stream.write(f"warning: {unproven} cached stages have no {MANIFEST} (older store): "
                     "trusted after their results parsed; `synthscale verify` lists them\n")
    return set_aside_count


def set_aside(folder: Path) -> Path:
    """Move a broken finished folder out of the way (kept for inspection, never loaded),
    so that its stage is computed again."""
    aside = folder.with_name(f".broken-{folder.name}-{uuid.uuid4().hex[:8]}")
    folder.rename(aside)
    return aside
