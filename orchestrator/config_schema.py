"""Loading YAML into frozen dataclasses: validation, line numbers, overrides.

Generic machinery, driven by type hints, that `config.py` uses for the
experiment schema. One error is one line that names the file (and line), the
dotted field and what was expected:

    experiments/demo.yaml:12: grid.sizes[2]: expected int >= 1, got '1k'

YAML is read with `yaml.safe_load`/`yaml.compose` only (no arbitrary tags).
Supported field types: bool, int, float, str, tuple[T, ...], Literal[...],
T | None and nested frozen dataclasses. Field metadata may carry `help`
(shown by `--help` and the docs), `min`, `max` and `nonempty`.

This module knows nothing of the experiment schema; it must not import torch,
ray or mlflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """Bad user input in a config file or override; the message is one line."""


def knob(default: Any, help: str, **checks: Any) -> Any:
    """A dataclass field with its default, its help text and value checks."""
    metadata = {"help": help, **checks}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return dataclasses.field(default_factory=lambda: value, metadata=metadata)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# ---------------------------------------------------------------- line numbers


def yaml_line_map(text: str) -> dict[str, int]:
    """Map every dotted path in a YAML document ("grid.sizes[2]") to its 1-based line."""
    lines: dict[str, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return lines
    if root is not None:
        _walk_nodes(root, "", lines)
    return lines


def _walk_nodes(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            lines[child] = key_node.start_mark.line + 1
            _walk_nodes(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_nodes(item, f"{path}[{i}]", lines)


class Where:
    """Where a value came from: a file (with its line map) or an override."""

    def __init__(self, source: str, lines: dict[str, int] | None = None):
        self.source = source
        self.lines = lines or {}
        self.overridden: dict[str, str] = {}  # dotted path -> override text

    def locate(self, path: str) -> str:
        for key, text in self.overridden.items():
            if path == key or path.startswith(key + ".") or path.startswith(key + "["):
                return f"override '{text}'"
        probe = path
        while probe:
            if probe in self.lines:
                return f"{self.source}:{self.lines[probe]}"
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            probe = probe.split("[")[0] if probe.endswith("]") else probe
        return self.source

    def error(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.locate(path)}: {path}: {message}")


# ---------------------------------------------------------------- conversion


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{value!r}"


def _expected(hint: Any, meta: dict[str, Any]) -> str:
    name = {bool: "true/false", int: "int", float: "number", str: "string"}.get(hint, str(hint))
    bounds = []
    if "min" in meta:
        bounds.append(f">= {meta['min']}")
    if "max" in meta:
        bounds.append(f"<= {meta['max']}")
    if "below" in meta:
        bounds.append(f"< {meta['below']}")
    return name + (" " + " and ".join(bounds) if bounds else "")


# PyYAML implements YAML 1.1, where `5e-3` (no dot) is a string, not a float.
# Researchers write learning rates that way, so float fields accept it.
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert_scalar(hint: Any, value: Any, path: str, where: Where, meta: dict[str, Any]) -> Any:
    if hint is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)
    ok = (
        (hint is bool and isinstance(value, bool))
        or (hint is int and isinstance(value, int) and not isinstance(value, bool))
        or (hint is float and isinstance(value, (int, float)) and not isinstance(value, bool))
        or (hint is str and isinstance(value, str))
    )
    if not ok:
        raise where.error(path, f"expected {_expected(hint, meta)}, got {_describe(value)}")
    if hint is float:
        value = float(value)
    if ("min" in meta and value < meta["min"] or "max" in meta and value > meta["max"]
            or "below" in meta and value >= meta["below"]):
        raise where.error(path, f"expected {_expected(hint, meta)}, got {_describe(value)}")
    if meta.get("nonempty") and value == "":
        raise where.error(path, "expected a non-empty string")
    return value


def convert(hint: Any, value: Any, path: str, where: Where, meta: dict[str, Any] | None = None) -> Any:
    """Check `value` against the type `hint` and return it in that type."""
    meta = meta or {}
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return build_dataclass(hint, value, path, where)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise where.error(path, f"expected one of {', '.join(map(repr, choices))}, got {_describe(value)}")
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return convert(args[0], value, path, where, meta)
    if origin is tuple:
        if not isinstance(value, list):
            raise where.error(path, f"expected a list, got {_describe(value)}")
        if meta.get("nonempty") and not value:
            raise where.error(path, "expected a non-empty list")
        item = get_args(hint)[0]
        return tuple(convert(item, v, f"{path}[{i}]", where, meta) for i, v in enumerate(value))
    return _convert_scalar(hint, value, path, where, meta)


def build_dataclass(cls: type, raw: Any, path: str, where: Where) -> Any:
    """Instantiate dataclass `cls` from a YAML mapping, rejecting unknown keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise where.error(path or "<top level>", f"expected a mapping of fields, got {_describe(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            child = f"{path}.{key}" if path else str(key)
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise where.error(child, f"unknown field{hint}; known: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            child = f"{path}.{name}" if path else name
            values[name] = convert(hints[name], raw[name], child, where, dict(f.metadata))
    return cls(**values)


# ---------------------------------------------------------------- overrides


def apply_override(raw: dict[str, Any], text: str, where: Where) -> None:
    """Apply one `dotted.key=value` override (value parsed as YAML) to `raw`."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected dotted.key=value, e.g. grid.seeds=[0,1]")
    key, _, value_text = text.partition("=")
    key = key.strip()
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{text}': value is not valid YAML ({exc.problem})") from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{text}': {part} is not a section")
        node = child
    node[parts[-1]] = value
    where.overridden[key] = text


def load_raw(path: Path) -> tuple[dict[str, Any], Where]:
    """Read a YAML file safely: its mapping and where each field came from."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: expected a mapping of sections at the top level")
    return raw, Where(str(path), yaml_line_map(text))


# ---------------------------------------------------------------- help


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every leaf field, for --help and the docs."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows.extend(field_docs(hints[f.name], key + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((key, json.dumps(to_dict(default)), f.metadata.get("help", "")))
    return rows


def to_dict(obj: Any) -> Any:
    """A dataclass as plain JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
