"""A per-request response cache for API backends: a response is paid for once.

Each request's key hashes everything that decides its answer (endpoint, server, model,
prompt, sampling parameters, seed and sample index). Records are JSON lines in shards
`<folder>/<host>-<pid>-<nonce>.jsonl`, one shard per open cache, appended and flushed after
every response: writers never share a file, so Ray workers on one host or on several hosts
of a shared filesystem need no lock (SQLite's WAL needs shared memory on one host, and its
locks are unreliable over NFS). A writer killed mid-line leaves a torn last line, which
reading skips. The cache only grows; deleting the folder clears it.

This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from orchestrator.backends.base import Completion


def request_key(request: dict[str, Any]) -> str:
    """sha256 of a request's canonical JSON (it must not hold the API key)."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._known = self._read()
        self._lock = threading.Lock()
        self._shard = None
        self.hits = 0
        self.stored = 0

    def _read(self) -> dict[str, Completion]:
        known: dict[str, Completion] = {}
        for path in sorted(self.folder.glob("*.jsonl")):
            with path.open(encoding="utf-8") as handle:
                for line in handle:
                    try:
                        rec = json.loads(line)
                        known[rec["key"]] = Completion(rec["text"], int(rec["num_tokens"]),
                                                       bool(rec["finished"]))
                    except (ValueError, KeyError, TypeError):   # a killed writer's torn line
                        continue
        return known

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str) -> Completion | None:
        with self._lock:
            found = self._known.get(key)
            self.hits += found is not None
            return found

    def put(self, key: str, completion: Completion) -> None:
        line = json.dumps({"key": key, "text": completion.text, "num_tokens": completion.num_tokens,
                           "finished": completion.finished}, ensure_ascii=False) + "\n"
        with self._lock:
            if self._shard is None:
                name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
                self._shard = (self.folder / name).open("a", encoding="utf-8")
            self._shard.write(line)
            self._shard.flush()     # in the OS's hands: a killed process keeps what it paid for
            self._known[key] = completion
            self.stored += 1

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.close()
                self._shard = None
