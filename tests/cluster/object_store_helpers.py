"""What both object-store test modules write and read: one `sft` artifact published
through a store's protocol, and the store's own records (DONE, attempts) read back."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.object_store import ATTEMPTS, ObjectStore
from orchestrator.store import DONE

KEY = "ab" * 32


def result(loss: float) -> dict:
    """result.json of an `sft` stage (a TrainResult)."""
    return {"examples": 1, "steps": 1, "final_loss": loss, "device": "cpu", "train_tokens": 7}


def publish(store, files: dict[str, bytes], loss: float = 1.0) -> Path:
    tmp = store.new_tmp("sft", KEY)
    for name, data in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_bytes(data)
    return store.commit(tmp, "sft", KEY, {"stage": "sft", "key": KEY}, result(loss))


def stage_files(folder: Path) -> dict[str, bytes]:
    """The stage's own files in a materialised folder (not the store's records)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (DONE, "manifest.json", "spec.json", "result.json")}


def done_record(store: ObjectStore, stage: str, key: str) -> dict:
    return json.loads(store.fs.cat_file(f"{store.base}/{stage}/{key[:16]}/{DONE}"))


def attempts(store: ObjectStore, stage: str, key: str) -> set[str]:
    prefix = f"{store.base}/{stage}/{key[:16]}/{ATTEMPTS}/"
    return {p[len(prefix):].split("/")[0] for p in store.fs.find(prefix.rstrip("/"))}


# ---------------------------------------------------------------- no server: memory://
