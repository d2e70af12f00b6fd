"""Store hygiene: `synthscale gc --keep CONFIG...` deletes the artifacts no kept plan uses.

The artifact store only grows: every knob change gives the stages that read it new keys
and new folders (`<store>/<stage>/<key[:16]>/`), and the old ones stay. `gc` expands the
plan of every kept config (an experiment YAML, a sweep folder or its config.resolved.yaml,
which also names a variant), and in the stores those configs use, lists every artifact
folder no kept plan references, with its size. Nothing is deleted without `--delete`.

A temporary folder of an attempt still running (its owner alive, see `store`) is never
touched, nor is anything in the store outside its `<stage>/` folders: the response cache
(`<store>/_responses/`) is kept; delete that folder to clear it.

This module must not import ray or mlflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config, ConfigError, load_config
from orchestrator.contract import RESPONSES
from orchestrator.planning import expand_grid
from orchestrator.store import ArtifactStore, attempt_is_dead, folder_bytes, open_store

RESOLVED = "config.resolved.yaml"


@dataclass
class Garbage:
    """One store's verdict: what kept plans use, and what they do not (with sizes)."""

    root: Path
    kept: int = 0
    kept_bytes: int = 0
    unused: list[tuple[Path, int]] = field(default_factory=list)   # (folder, bytes)
    running: int = 0                                                 # live attempts, left alone

    @property
    def unused_bytes(self) -> int:
        return sum(size for _, size in self.unused)


def kept_config(name: str) -> Config:
    """A kept config: an experiment YAML, or a sweep folder (its config.resolved.yaml)."""
    path = Path(name)
    if path.is_dir():
        path = path / RESOLVED
        if not path.is_file():
            raise ConfigError(f"--keep {name}: a folder without {RESOLVED} (not a sweep folder)")
    return load_config(path)


def referenced(configs: Sequence[Config]) -> dict[Path, set[tuple[str, str]]]:
    """Per store root: the (stage, folder name) of every stage some kept plan contains."""
    stores: dict[Path, set[tuple[str, str]]] = {}
    for config in configs:
        store = open_store(config.artifacts_root)
        if not isinstance(store, ArtifactStore):
            raise ConfigError(f"cluster.artifacts={config.artifacts_root}: gc cleans folder "
                              "stores only (an object store's old keys: delete their "
                              "<stage>/<key>/ prefixes, or a lifecycle rule)")
        used = stores.setdefault(store.root, set())
        used.update((spec.stage, store.path(spec.stage, spec.key).name)
                    for spec in expand_grid(config).specs)
    return stores


def survey(root: Path, used: set[tuple[str, str]]) -> Garbage:
    """What in the store at `root` the kept plans do not reference."""
    verdict = Garbage(root)
    if not root.is_dir():
        return verdict
    for stage_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name != RESPONSES):
        for folder in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
            size = folder_bytes(folder)
            if folder.name.startswith(".tmp-") and not attempt_is_dead(folder):
                verdict.running += 1
            elif (stage_dir.name, folder.name) in used:
                verdict.kept += 1
                verdict.kept_bytes += size
            else:
                verdict.unused.append((folder, size))
    return verdict


def collect(keep: Sequence[str]) -> list[Garbage]:
    """The verdict for every store the kept configs use (reads, deletes nothing)."""
    stores = referenced([kept_config(name) for name in keep])
    return [survey(root, used) for root, used in stores.items()]


def delete(verdicts: Sequence[Garbage]) -> int:
    """Remove every unused folder; returns the bytes freed."""
    import shutil

    freed = 0
    for verdict in verdicts:
        for folder, size in verdict.unused:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                freed += size
    return freed


def human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def describe(verdicts: Sequence[Garbage]) -> str:
    lines = []
    for v in verdicts:
        lines.append(f"store {v.root}: {v.kept} artifacts kept ({human(v.kept_bytes)}), "
                     f"{len(v.unused)} used by no kept plan ({human(v.unused_bytes)})"
                     + (f", {v.running} attempts still running (left alone)" if v.running else ""))
        lines += [f"  {folder.relative_to(v.root)}  {human(size)}" for folder, size in v.unused]
    return "\n".join(lines)
