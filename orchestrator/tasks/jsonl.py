"""Reading benchmark records (local JSONL or the Hugging Face hub) and prediction
JSONL files, with errors that point at the line.

Every loader in tasks/ (GSM8K, MATH, graded predictions) reads one JSON object
per line; a bad line must fail with `file:line: what was wrong`, never with a
bare `KeyError` or `JSONDecodeError` from deep inside a stage. This module only
reads and checks; it must not interpret the fields (that is each task's job).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def read_jsonl(path: str | Path) -> Iterator[tuple[str, dict]]:
    """Yield (`"name.jsonl:LINE"`, object) for each non-blank line of `path`.

    The first element is the location prefix for error messages. A line that is
    not a JSON object raises ValueError naming the file and line.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue    # a trailing newline or a blank separator line is not an item
            where = f"{path.name}:{number}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def split_file_records(task: str, folder: Path, split: str,
                       fields: str) -> Iterator[tuple[str, dict]]:
    """(location, record) pairs of `folder/<split>.jsonl`; a missing file is one
    line saying what `task.path` must hold (`fields` describes the records)."""
    file = folder / f"{split}.jsonl"
    if not file.is_file():
        raise FileNotFoundError(f"{task}: {file} not found; task.path must be a folder with "
                                f"train.jsonl and test.jsonl ({fields})")
    return read_jsonl(file)


def split_limits(task: str, n_train: int | None, n_test: int | None) -> dict[str, int | None]:
    """{"train": n_train, "test": n_test}, each the number of problems to read from the
    start of that split (None: all, 0: none)."""
    for label, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None and n < 0:
            raise ValueError(f"{task}: {label} must be >= 0 or None, got {n}")
    return {"train": n_train, "test": n_test}


def require_str(obj: dict, field: str, where: str, allow_number: bool = False) -> str:
    """`obj[field]` as a string, or a ValueError saying which field is wrong.

    `allow_number` accepts a JSON number and returns its text: bare answers are
    often written as numbers (`"answer": 18`).
    """
    if field not in obj:
        raise ValueError(f'{where}: missing field "{field}"')
    value = obj[field]
    if isinstance(value, str):
        return value
    if allow_number and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    expected = "string or number" if allow_number else "string"
    raise ValueError(f'{where}: field "{field}": expected {expected}, got {type(value).__name__}')


def hub_records(task: str, dataset: str, config: str | None, split: str,
                advice: str) -> Iterator[tuple[str, dict]]:
    """(location, record) pairs of one split of a hub dataset, via `datasets`.

    Offline, `datasets` raises ConnectionError, OSError, its own *NotFound
    errors and more, version by version; every one of them means "use a local
    path", which is what the RuntimeError says (with `advice`).
    """
    try:
        import datasets
    except ImportError as e:
        raise RuntimeError(f"{task}: no local path and `datasets` is not installed; {advice}") from e
    name = f"{dataset} ({config})" if config else dataset
    try:
        rows = datasets.load_dataset(dataset, config, split=split)
    except Exception as e:  # noqa: BLE001 - see the docstring
        raise RuntimeError(
            f"{task}: could not load {name} from the Hugging Face hub ({type(e).__name__}: {e}); "
            f"{advice}. Without network, HF_HUB_OFFLINE=1 makes this fail at once instead of "
            "after retries") from e
    prefix = f"{dataset}/{config}" if config else dataset
    return ((f"{prefix}[{split}]:{i + 1}", dict(row)) for i, row in enumerate(rows))
