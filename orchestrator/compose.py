"""Configs that compose: a `base:` key names one or more YAML files merged under this one.

Order, lowest first: each base file (itself composed, in the order listed), then the
file's own keys, then command-line overrides. Mappings merge key by key; a list or a
scalar replaces the whole value below it, as in OmegaConf's `merge`, so the dotted
overrides (`grid.sizes=[100]`) mean the same on top of a composed file. Relative base
paths are relative to the folder of the file that names them; a cycle is an error.

Every merged field remembers the file and line it came from (`ComposedWhere`), so an
error in a key taken from a base file names that file and its line.

Like `config_schema`, this module knows nothing of the experiment schema beyond the
`base` key; it must not import torch, ray or mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config_schema import Where, load_raw

BASE_KEY = "base"


class ComposedWhere(Where):
    """Where a value came from when several files were merged: per dotted path, a file
    and its line (the file's own `Where` answers for paths no file set)."""

    def __init__(self, source: str):
        super().__init__(source)
        self.origins: dict[str, str] = {}     # dotted path -> "file:line"

    def place_of(self, path: str) -> str | None:
        return self.origins.get(path)


def load_composed(path: Path) -> tuple[dict[str, Any], Where]:
    """The file's mapping with its bases merged underneath, and where each field came from."""
    where = ComposedWhere(str(path))
    raw = _compose(path, where, ())
    return raw, where


def _compose(path: Path, where: ComposedWhere, chain: tuple[Path, ...]) -> dict[str, Any]:
    raw, own = load_raw(path)
    merged: dict[str, Any] = {}
    for base in _base_paths(path, raw.pop(BASE_KEY, None), own, chain):
        _merge(merged, _compose(base, where, chain + (path.resolve(),)), "", where, None)
    _merge(merged, raw, "", where, own)
    return merged


def _base_paths(path: Path, value: Any, own: Where, chain: tuple[Path, ...]) -> list[Path]:
    if value is None:
        return []
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise own.error(BASE_KEY, f"expected a file name or a list of file names, got {value!r}")
    paths = []
    for i, name in enumerate(names):
        base = (path.parent / name) if not Path(name).is_absolute() else Path(name)
        field = BASE_KEY if isinstance(value, str) else f"{BASE_KEY}[{i}]"
        if base.resolve() in chain + (path.resolve(),):
            loop = " -> ".join(str(p) for p in chain + (path, base))
            raise own.error(field, f"{name} is already being included: a cycle ({loop})")
        if not base.is_file():
            raise own.error(field, f"no such file: {base}")
        paths.append(base)
    return paths


def _merge(into: dict[str, Any], top: dict[str, Any], prefix: str, where: ComposedWhere,
           own: Where | None) -> None:
    """Merge `top` over `into` (mappings key by key, anything else replaces), recording
    origins: `own` is the file `top` was read from, None when `top` is an already
    composed base whose origins are recorded."""
    for key, value in top.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _record(where, own, path, subtree=False)
            _merge(into[key], value, path, where, own)
            continue
        into[key] = value
        if own is not None:
            _forget(where, path)
            _record(where, own, path, subtree=True)


def _record(where: ComposedWhere, own: Where | None, path: str, subtree: bool) -> None:
    if own is None:
        return
    for key, line in own.lines.items():
        if key == path or subtree and key.startswith((path + ".", path + "[")):
            where.origins[key] = f"{own.source}:{line}"


def _forget(where: ComposedWhere, path: str) -> None:
    """A replaced value's old children (a base's longer list) no longer exist."""
    for key in [k for k in where.origins if k.startswith((path + ".", path + "["))]:
        del where.origins[key]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted key: leaf value} (lists are leaves)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, before, after) for every leaf that differs, in `after`'s order."""
    old, new = flatten(before), flatten(after)
    return [(key, old.get(key), value) for key, value in new.items() if old.get(key) != value] + \
        [(key, value, None) for key, value in old.items() if key not in new]
