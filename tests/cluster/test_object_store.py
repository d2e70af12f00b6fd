"""Artifacts on object storage (issue 13), where no server is needed: the store's protocol
on fsspec's in-memory filesystem. Readers trust only DONE, which names one complete
attempt; a DONE naming files outside its artifact is refused; the driver's copy leaves the
model out; every copy checks what it downloads. The same protocol on a real S3 server:
test_object_store_s3.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from orchestrator.config_schema import ConfigError
from orchestrator.contract import Files
from orchestrator.object_store import ATTEMPTS, PARTIAL, CorruptArtifact, ObjectStore
from orchestrator.store import DONE, manifest, open_store

from ..conftest import ROOT
from .object_store_helpers import KEY, attempts, done_record, publish, stage_files


@pytest.fixture
def memory_store(tmp_path):
    url = f"memory://bucket-{uuid.uuid4().hex[:8]}/store"
    store = ObjectStore(url, tmp_path / "cache")
    yield store
    store.fs.rm(store.base, recursive=True)


def test_open_store_picks_the_store_by_url(tmp_path):
    assert open_store(tmp_path).root == tmp_path.resolve()
    assert open_store(f"file://{tmp_path}").root == tmp_path.resolve()
    assert isinstance(open_store("memory://b/p", str(tmp_path)), ObjectStore)
    with pytest.raises(ConfigError) as raised:
        open_store("nosuchprotocol://bucket/prefix")
    message = str(raised.value)
    assert "cluster.artifacts=nosuchprotocol://bucket/prefix" in message and "\n" not in message


def test_a_missing_protocol_package_is_one_line_and_exit_2(tmp_path):
    """s3:// without s3fs: the sweep names cluster.artifacts and the extra, before it
    writes anything."""
    code = ("import sys; sys.modules['s3fs'] = None; from orchestrator.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "sweep", "experiments/smoke.yaml",
                           f"experiment.output_dir={tmp_path / 'run'}",
                           "cluster.artifacts=s3://bucket/prefix"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "cluster.artifacts=s3://bucket/prefix" in lines[0] and "synthscale[s3]" in lines[0]
    assert not (tmp_path / "run").exists()


def test_verify_of_a_bucket_says_what_checks_it():
    done = subprocess.run([sys.executable, "-m", "orchestrator", "verify", "s3://bucket/prefix"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "s3://bucket/prefix: verify checks folder stores only" in lines[0]


def test_done_is_written_last_and_names_a_complete_attempt(memory_store, tmp_path):
    files = {"model.bin": os.urandom(3000), "sub/data.jsonl": b'{"a": 1}\n'}
    assert not memory_store.is_done("sft", KEY)
    folder = publish(memory_store, files)
    record = done_record(memory_store, "sft", KEY)
    assert attempts(memory_store, "sft", KEY) == {record["attempt"]}
    assert sorted(record["manifest"]) == ["model.bin", "result.json", "spec.json",
                                          "sub/data.jsonl"]
    assert stage_files(folder) == files and folder.parent.parent == tmp_path / "cache"
    assert memory_store.spec("sft", KEY) == {"stage": "sft", "key": KEY}

    elsewhere = ObjectStore(memory_store.url, tmp_path / "other-node")     # an empty cache
    loaded = elsewhere.load("sft", KEY)
    assert Path(loaded.artifact_dir).parent.parent == tmp_path / "other-node"
    assert stage_files(Path(loaded.artifact_dir)) == files and loaded.result.final_loss == 1.0
    assert not list((tmp_path / "other-node" / "sft").glob(".tmp-*"))    # no scratch left


def test_a_writer_that_missed_the_other_publish_replaces_done_whole(memory_store, tmp_path):
    """Two writers that both saw no DONE: the last DONE names its own complete attempt,
    and every reader, even one holding the first in its cache, gets exactly that one."""

    class Blind(ObjectStore):            # checked DONE before the first writer published
        def is_done(self, stage, key):
            return False

    first = {"model.bin": b"A" * 500, "data.jsonl": b"first\n"}
    second = {"model.bin": b"B" * 700, "data.jsonl": b"second\n"}
    publish(memory_store, first)
    publish(Blind(memory_store.url, tmp_path / "writer-b"), second, loss=2.0)
    record = done_record(memory_store, "sft", KEY)
    assert len(attempts(memory_store, "sft", KEY)) == 2            # the loser's stays, unnamed
    assert stage_files(memory_store.local_dir("sft", KEY)) == second     # cache refreshed
    assert memory_store.load("sft", KEY).result.final_loss == 2.0
    assert memory_store.clean_stale(older_than=0) == 1
    assert attempts(memory_store, "sft", KEY) == {record["attempt"]}
    assert memory_store.clean_stale(older_than=0) == 0                 # DONE's is never removed


def test_a_done_naming_files_outside_its_artifact_is_refused(memory_store, tmp_path):
    """DONE comes from a shared bucket: a name like ../../x must not write outside the
    node's cache."""
    publish(memory_store, {"model.bin": b"x"})
    done = f"{memory_store.base}/sft/{KEY[:16]}/{DONE}"
    record = json.loads(memory_store.fs.cat_file(done))
    record["manifest"]["../../escaped.txt"] = {"bytes": 1, "sha256": "0" * 64}
    memory_store.fs.pipe_file(done, json.dumps(record).encode())
    with pytest.raises(CorruptArtifact, match="escaped.txt"):
        ObjectStore(memory_store.url, tmp_path / "elsewhere" / "cache").load("sft", KEY)
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_recent_unpublished_attempt_is_left_alone(memory_store):
    """clean_stale runs at every sweep's start: an upload younger than the bound may be a
    live writer's (another sweep's), so only older ones are garbage."""
    prefix = f"{memory_store.base}/sft/{KEY[:16]}/{ATTEMPTS}/{int(time.time())}-live"
    memory_store.fs.pipe_file(f"{prefix}/model.bin", b"uploading")
    assert memory_store.clean_stale() == 0 and memory_store.fs.exists(f"{prefix}/model.bin")


def test_discard_unpublishes_first(memory_store, tmp_path):
    publish(memory_store, {"model/w.bin": b"x", "data.jsonl": b"{}\n"})
    memory_store.discard("sft", KEY)
    assert not memory_store.is_done("sft", KEY) and attempts(memory_store, "sft", KEY) == set()
    assert not memory_store.path("sft", KEY).exists()

    publish(memory_store, {"model/w.bin": b"x", "data.jsonl": b"{}\n"})
    driver = ObjectStore(memory_store.url, tmp_path / "driver")     # holds a copy sans model
    assert driver.local_dir("sft", KEY, model=False) == driver.partial_path("sft", KEY)
    driver.discard("sft", KEY)
    assert not driver.is_done("sft", KEY) and not driver.partial_path("sft", KEY).exists()


# A trained model's folder (Files.MODEL) beside the records the driver reads.
WEIGHTS = os.urandom(4 << 20)
MODEL_ARTIFACT = {f"{Files.MODEL}/model.safetensors": WEIGHTS,
                  f"{Files.MODEL}/config.json": b'{"hidden_size": 8}',
                  "predictions.jsonl": b'{"problem_id": "p1", "correct": true}\n' * 50}


def counting_downloads(store: ObjectStore, monkeypatch) -> list[str]:
    """The remote paths `store` downloads from now on (every download is one fs.get)."""
    fetched: list[str] = []
    real_get = store.fs.get

    def get(remote, local, *args, **kwargs):
        fetched.extend(remote)
        return real_get(remote, local, *args, **kwargs)

    monkeypatch.setattr(store.fs, "get", get)
    return fetched


def test_the_drivers_copy_leaves_the_model_out_and_is_checked(memory_store, tmp_path,
                                                              monkeypatch):
    """model=False (the driver) downloads every file but those under model/, each checked
    against DONE's sha256, into a folder of its own; asked again, nothing is downloaded."""
    publish(memory_store, MODEL_ARTIFACT)
    published = done_record(memory_store, "sft", KEY)["manifest"]
    driver = ObjectStore(memory_store.url, tmp_path / "driver")
    fetched = counting_downloads(driver, monkeypatch)
    folder = driver.local_dir("sft", KEY, model=False)

    assert folder == driver.partial_path("sft", KEY) == tmp_path / "driver" / "sft" / (
        KEY[:16] + PARTIAL)
    assert not driver.path("sft", KEY).exists()           # never taken for the full copy
    assert not (folder / Files.MODEL).exists()
    fetched_bytes = sum(driver.fs.size(path) for path in fetched)
    small = {n: e for n, e in published.items() if not n.startswith(f"{Files.MODEL}/")}
    assert fetched_bytes == sum(e["bytes"] for e in small.values()) < len(WEIGHTS) / 100
    assert manifest(folder) == small                      # what it got is what DONE lists
    assert json.loads((folder / "manifest.json").read_text()) == small
    assert (folder / "predictions.jsonl").read_bytes() == MODEL_ARTIFACT["predictions.jsonl"]
    assert driver.load("sft", KEY, model=False).result.final_loss == 1.0

    fetched.clear()
    assert driver.local_dir("sft", KEY, model=False) == folder and fetched == []


def test_a_worker_beside_the_driver_gets_the_whole_artifact(memory_store, tmp_path,
                                                             monkeypatch):
    """The one-node case: a worker sharing the driver's cache downloads the full artifact
    although a copy without the model is there, and that full copy then serves the driver."""
    publish(memory_store, MODEL_ARTIFACT)
    node = ObjectStore(memory_store.url, tmp_path / "node")
    partial = node.local_dir("sft", KEY, model=False)
    fetched = counting_downloads(node, monkeypatch)

    full = node.local_dir("sft", KEY)                     # what _execute asks for its inputs
    assert full == node.path("sft", KEY) != partial
    assert stage_files(full) == MODEL_ARTIFACT
    assert manifest(full) == done_record(node, "sft", KEY)["manifest"]
    assert any(path.endswith("model/model.safetensors") for path in fetched)
    fetched.clear()
    assert node.local_dir("sft", KEY, model=False) == full and fetched == []
    assert node.local_dir("sft", KEY) == full and fetched == []


def test_an_artifact_without_a_model_is_fetched_whole_for_the_driver(memory_store, tmp_path):
    files = {"predictions.jsonl": b"{}\n", "model.bin": b"not under model/"}
    publish(memory_store, files)
    node = ObjectStore(memory_store.url, tmp_path / "node")
    folder = node.local_dir("sft", KEY, model=False)
    assert folder == node.path("sft", KEY) and stage_files(folder) == files
    assert not node.partial_path("sft", KEY).exists()


def test_each_copy_checks_the_files_it_downloads(memory_store, tmp_path):
    """An altered weight file stops the worker's full copy, not the driver's (which never
    reads it); an altered record stops both."""
    publish(memory_store, MODEL_ARTIFACT)
    prefix = (f"{memory_store.base}/sft/{KEY[:16]}/{ATTEMPTS}/"
              f"{done_record(memory_store, 'sft', KEY)['attempt']}")
    memory_store.fs.pipe_file(f"{prefix}/model/model.safetensors", bytes(len(WEIGHTS)))
    node = ObjectStore(memory_store.url, tmp_path / "node")
    assert stage_files(node.local_dir("sft", KEY, model=False)) == {
        "predictions.jsonl": MODEL_ARTIFACT["predictions.jsonl"]}
    with pytest.raises(CorruptArtifact, match="model/model.safetensors: sha256"):
        node.local_dir("sft", KEY)
    assert not node.path("sft", KEY).exists()

    memory_store.fs.pipe_file(f"{prefix}/predictions.jsonl", b"{}\n")
    with pytest.raises(CorruptArtifact, match="predictions.jsonl: sha256"):
        ObjectStore(memory_store.url, tmp_path / "driver").local_dir("sft", KEY, model=False)
    assert not (tmp_path / "driver" / "sft" / (KEY[:16] + PARTIAL)).exists()
