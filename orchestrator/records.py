"""JSONL rows of stage artifacts (pools, samples, pairs, rollouts, predictions).

Every intermediate artifact is a readable JSONL a researcher can open; this
module is the one way stages write and read them. Reading goes through
`tasks.jsonl.read_jsonl`, so a corrupt line fails with its file and line.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from pathlib import Path

from orchestrator.tasks.jsonl import read_jsonl


def write_rows(path: Path, rows: Iterable[dict]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def read_rows(path: Path, limit: int | None = None) -> list[dict]:
    return [row for _, row in itertools.islice(read_jsonl(path), limit)]
