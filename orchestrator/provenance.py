"""Where a result came from: the code version, git commit and library versions.

Each stage artifact's `spec.json` records them (written where the stage ran), and
the sweep's MLflow run carries them as tags. A cached artifact made with other
library versions is still reused (its cache key covers configs and code, not the
environment), with a warning; `cluster.strict_cache: true` recomputes it.

Versions are read from installed package metadata, never by importing the
library: importing vllm (or torch) costs seconds and may touch CUDA.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "trl", "vllm", "ray")
PROJECT = Path(__file__).resolve().parents[1]       # the checkout holding orchestrator/


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that compute the results (absent: not installed)."""
    found = {name: _installed(name) for name in LIBRARIES}
    return {name: version for name, version in found.items() if version}


@functools.cache
def git_commit() -> str | None:
    """HEAD of the project's git checkout; None when it is not one (an installed wheel)
    or git is missing."""
    if not (PROJECT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def code_version() -> str:
    return _installed("synthscale") or "unknown"


def provenance() -> dict[str, Any]:
    """What spec.json records about the process that produced an artifact."""
    found: dict[str, Any] = {"synthscale": code_version(), "libraries": library_versions()}
    commit = git_commit()
    if commit:
        found["git_commit"] = commit
    return found


def library_differences(recorded: Any, current: dict[str, str]) -> list[str]:
    """The libraries whose version differs between an artifact's `provenance` and this
    process, as "torch 2.11.0 (here 2.13.0)". Only libraries installed on both sides
    count: a CPU-only driver without vllm says nothing about the GPU workers' vllm. An
    artifact that records no provenance (made before it was recorded) has none."""
    made_with = recorded.get("libraries") if isinstance(recorded, dict) else None
    if not isinstance(made_with, dict):
        return []
    return [f"{name} {made_with[name]} (here {current[name]})"
            for name in sorted(set(made_with) & set(current)) if made_with[name] != current[name]]
