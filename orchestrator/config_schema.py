"""Loading YAML into frozen dataclasses: validation, line numbers, overrides.

Generic machinery, driven by type hints, that `config.py` uses for the
experiment schema. One error is one line that names the file (and line), the
dotted field and what was expected:

    experiments/demo.yaml:12: grid.sizes[2]: expected int >= 1, got '1k'

YAML is read with PyYAML's SafeLoader only: a `!!python/...` or any other
non-standard tag is refused, never constructed. A config file is plain UTF-8
text of at most `MAX_CONFIG_BYTES`; duplicate keys (which YAML would silently
resolve to the last) are refused; anchors and aliases work, but an alias is
walked once, so a "billion laughs" document cannot stall the loader.
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
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

# An experiment YAML is a few KB; a bigger file is a mistake (a data file passed as a
# config), and parsing tens of MB of YAML in pure Python takes minutes.
MAX_CONFIG_BYTES = 1 << 20
# Deeper YAML nesting than this is refused (PyYAML's composer recurses per level).
MAX_DEPTH = 64
# Values echoed in messages are cut to this many characters.
MAX_ECHO = 80
TOP = "<top level>"


class ConfigError(ValueError):
    """Bad user input in a config file or override; the message is one line."""

    def __init__(self, message: str):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


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
    except (yaml.YAMLError, RecursionError):
        return lines
    if root is not None:
        _walk_nodes(root, "", lines, set())
    return lines


def _walk_nodes(node: yaml.Node, path: str, lines: dict[str, int], seen: set[int]) -> None:
    lines[path] = node.start_mark.line + 1
    # An alias is the same node object again: walk it once (a nested alias bomb
    # would otherwise be visited exponentially many times).
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            lines[child] = key_node.start_mark.line + 1
            _walk_nodes(value_node, child, lines, seen)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk_nodes(item, f"{path}[{i}]", lines, seen)


def _duplicate_key(node: yaml.Node, path: str, seen: set[int]) -> tuple[str, int, int] | None:
    """The first key that a mapping repeats: (dotted path, its line, the first one's line)."""
    if id(node) in seen:
        return None
    seen.add(id(node))
    children: list[tuple[str, yaml.Node]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            line = key_node.start_mark.line + 1
            if key in first and key_node.tag != "tag:yaml.org,2002:merge":
                return child, line, first[key]
            first.setdefault(key, line)
            children.append((child, value_node))
    elif isinstance(node, yaml.SequenceNode):
        children = [(f"{path}[{i}]", item) for i, item in enumerate(node.value)]
    for child, value_node in children:
        found = _duplicate_key(value_node, child, seen)
        if found:
            return found
    return None


_KEY_LINE = re.compile(r"(\s*)(?:- )?([^\s#:\-\[\]{}][^:#]*?)\s*:(?:\s|$)")


def path_at_line(text: str, line: int) -> str:
    """The dotted key that block-style YAML is inside at `line`, read from indentation
    alone: for errors in a document that does not parse, so no node tree exists."""
    stack: list[tuple[int, str]] = []
    for row in text.splitlines()[:line]:
        stripped = row.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(row) - len(row.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        match = _KEY_LINE.match(row)
        if match:
            stack.append((indent, match.group(2).strip().strip("'\"")))
    return ".".join(key for _, key in stack) or TOP


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
        while probe:        # the closest enclosing key that has a recorded place
            place = self.place_of(probe)
            if place is not None:
                return place
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
            probe = probe.split("[")[0] if probe.endswith("]") else probe
        return self.source

    def place_of(self, path: str) -> str | None:
        """`file:line` where exactly `path` was set, or None."""
        return f"{self.source}:{self.lines[path]}" if path in self.lines else None

    def error(self, path: str, message: str) -> ConfigError:
        # An override that set something below `path` (grid.sizes.x=1 turned grid.sizes
        # into a mapping) is where the bad value came from.
        below = [text for key, text in self.overridden.items() if key.startswith(path + ".")]
        location = f"override '{below[0]}'" if below and path else self.locate(path)
        if location.startswith("override '"):
            location = f"{self.source}: {location}"
        return ConfigError(f"{location}: {path or TOP}: {message}")


# ---------------------------------------------------------------- conversion


def _describe(value: Any) -> str:
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(value)} characters)"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text)} characters)"


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
        if not math.isfinite(value):
            raise where.error(path, f"expected a finite {_expected(hint, meta)}, got {value!r}")
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
        raise where.error(path or TOP, f"expected a mapping of fields, got {_describe(raw)}")
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
    key, equals, value_text = text.partition("=")
    key = key.strip()
    head = f"{where.source}: override '{text}'"
    if not equals:
        raise ConfigError(f"{head}: {key or '<empty key>'}: expected dotted.key=value, "
                          f"e.g. {key or 'grid.seeds'}=[0,1]")
    parts = key.split(".")
    if not all(part.strip() for part in parts):
        raise ConfigError(f"{head}: {key or '<empty key>'}: expected dotted.key=value with a key "
                          f"like grid.seeds")
    try:
        value = yaml.safe_load(value_text) if value_text.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{head}: {key}: value is not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{head}: {key}: value nested deeper than {MAX_DEPTH} levels") from None
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(parts[:i + 1])
            raise ConfigError(f"{head}: {key}: {section} is a value, not a section")
        node = child
    node[parts[-1]] = value
    where.overridden[key] = text


def load_raw(path: Path) -> tuple[dict[str, Any], Where]:
    """Read a YAML file safely: its mapping and where each field came from."""
    text = _read_text(path)
    raw, root = _parse(path, text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}:1: {TOP}: expected a mapping of sections, got {_describe(raw)}")
    duplicate = _duplicate_key(root, "", set()) if root is not None else None
    if duplicate:
        key, line, first = duplicate
        raise ConfigError(f"{path}:{line}: {key}: duplicate key (first set on line {first}); "
                          f"YAML would silently keep only the last")
    lines: dict[str, int] = {}
    if root is not None:
        _walk_nodes(root, "", lines, set())
    return raw, Where(str(path), lines)


def _read_text(path: Path) -> str:
    """The file as UTF-8 text, refusing what cannot be a config before parsing it."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: {TOP}: cannot read config ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        size = path.stat().st_size if path.is_file() else len(data)
        raise ConfigError(f"{path}: {TOP}: {size:,} bytes, over the {MAX_CONFIG_BYTES >> 20} MiB "
                          f"limit of a config file (is this a data file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        field = path_at_line(data.decode("utf-8", "replace"), line)
        raise ConfigError(f"{path}:{line}: {field}: not UTF-8 text (byte "
                          f"0x{data[exc.start]:02x}); save the file as UTF-8") from None


def _parse(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """The document's data and its node tree, from one SafeLoader pass."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)      # its reader refuses control characters here
        root = loader.get_single_node()
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.YAMLError as exc:
        raise _yaml_error(path, text, exc) from None
    except RecursionError:
        line = _too_deep_line(text)
        raise ConfigError(f"{path}:{line}: {path_at_line(text, line)}: nested deeper than "
                          f"{MAX_DEPTH} levels") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text[:exc.position].count("\n") + 1
        problem = f"control character {exc.character!r} is not allowed in YAML"
    else:
        line = mark.line + 1 if mark else None
        problem = getattr(exc, "problem", None) or type(exc).__name__
    if isinstance(exc, yaml.constructor.ConstructorError):
        problem += "; a config is plain data (no !!python or other custom tags)"
    if isinstance(exc, yaml.composer.ComposerError) and "document" in str(problem):
        return ConfigError(f"{path}:{line}: {TOP}: expected one YAML document, found another "
                           f"after '---'")
    where = f"{path}:{line}" if line else str(path)
    field = path_at_line(text, line) if line else TOP
    return ConfigError(f"{where}: {field}: not valid YAML ({problem})")


def _too_deep_line(text: str) -> int:
    """The line where nesting passes MAX_DEPTH, found with PyYAML's scanner, which
    (unlike its composer) does not recurse."""
    depth = 0
    opening = (yaml.FlowSequenceStartToken, yaml.FlowMappingStartToken,
               yaml.BlockSequenceStartToken, yaml.BlockMappingStartToken)
    closing = (yaml.FlowSequenceEndToken, yaml.FlowMappingEndToken, yaml.BlockEndToken)
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            depth += isinstance(token, opening) - isinstance(token, closing)
            if depth > MAX_DEPTH:
                return token.start_mark.line + 1
    except yaml.YAMLError:
        pass
    return 1


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
