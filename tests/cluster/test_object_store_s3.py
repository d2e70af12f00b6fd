"""Artifacts on object storage (issue 13) on a real S3-compatible server (moto's server
mode, a process on 127.0.0.1): a killed writer leaves nothing trusted, racing writers never
publish a mix, an altered object is refused by name, and the smoke sweep publishes, re-runs
from the bucket alone, and sends its MLflow artifacts to the same bucket. The protocol
without a server: test_object_store.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.contract import Files
from orchestrator.object_store import ATTEMPTS, PARTIAL, CorruptArtifact, ObjectStore
from orchestrator.planning import expand_grid
from orchestrator.processes import end_group, start_group
from orchestrator.store import DONE, run_cached

from ..conftest import ROOT, free_port
from ..faults.sweep_process import SMALL, Sweep, stage_runs
from ..faults.test_secrets import _files_with
from .object_store_helpers import KEY, attempts, done_record, publish, stage_files
from .ray_nodes import LocalCluster

pytest.importorskip("s3fs", reason="the s3 extra (s3fs) is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")

BUCKET = "synthscale-test"
SECRET = f"SECRET-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    """`python -m moto.server` on 127.0.0.1 (in its own process group, ended after the
    module) with one bucket; yields its endpoint URL."""
    home = tmp_path_factory.mktemp("moto")
    port = free_port()
    with (home / "server.log").open("w") as log:
        proc = start_group([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                            str(port)], stdout=log, stderr=subprocess.STDOUT, cwd=home)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited: {(home / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not come up in 60 s"
                time.sleep(0.3)
        request = urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT")
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield endpoint
    finally:
        end_group(proc)


@pytest.fixture
def s3(moto_server, monkeypatch):
    """The environment a node reads its S3 endpoint and credentials from (s3fs via
    botocore, MLflow via boto3); yields a fresh prefix URL in the bucket."""
    for name, value in {"AWS_ACCESS_KEY_ID": "synthscale-test", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_server,
                        "MLFLOW_S3_ENDPOINT_URL": moto_server}.items():
        monkeypatch.setenv(name, value)
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"


def teacher_spec():
    """The smoke sweep's cheapest real stage (the oracle teacher's pool)."""
    config = load_config(ROOT / "experiments" / "smoke.yaml", list(SMALL))
    return next(s for s in expand_grid(config).specs if s.stage == "teacher_generate")


# A writer that dies after uploading its attempt, before DONE: its DONE write hangs (the
# fault is injected in the writer only; the server and the upload are real).
WRITER = """
import sys, time
from orchestrator.config import load_config
from orchestrator.object_store import ObjectStore
from orchestrator.planning import expand_grid
from orchestrator.store import run_cached
config = load_config("experiments/smoke.yaml", sys.argv[3:])
spec = next(s for s in expand_grid(config).specs if s.stage == "teacher_generate")
store = ObjectStore(sys.argv[1], sys.argv[2])
def stuck(path, value, **kwargs):
    print("uploaded", flush=True)
    time.sleep(600)
store.fs.pipe_file = stuck
run_cached(store, spec, {})
"""


def test_a_killed_writer_leaves_nothing_a_reader_trusts(s3, tmp_path):
    writer = start_group([sys.executable, "-c", WRITER, s3, str(tmp_path / "cache"), *SMALL],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert writer.stdout.readline().strip() == "uploaded", writer.stdout.read()[-2000:]
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait(timeout=10)
    finally:
        end_group(writer)
    spec = teacher_spec()
    store = ObjectStore(s3, tmp_path / "cache")
    orphan = attempts(store, spec.stage, spec.key)
    assert len(orphan) == 1 and not store.is_done(spec.stage, spec.key)
    assert store.spec(spec.stage, spec.key) == {}
    assert store.dead_attempts(spec.stage, spec.key) == 1       # its local scratch, on this node

    outcome = run_cached(store, spec, {})                        # the next run computes
    assert not outcome.cached and store.is_done(spec.stage, spec.key)
    published = done_record(store, spec.stage, spec.key)["attempt"]
    assert published not in orphan
    assert store.clean_stale(older_than=0) == 1
    assert attempts(store, spec.stage, spec.key) == {published}
    again = run_cached(ObjectStore(s3, tmp_path / "fresh-cache"), spec, {})
    assert again.cached and again.artifact_dir != outcome.artifact_dir
    files = stage_files(Path(outcome.artifact_dir))
    assert files and stage_files(Path(again.artifact_dir)) == files


CONCURRENT = """
import sys
from orchestrator.object_store import ObjectStore
store = ObjectStore(sys.argv[1], sys.argv[2])
tmp = store.new_tmp("sft", sys.argv[4])
for i in range(40):
    (tmp / f"shard-{i:02d}.bin").write_bytes(sys.argv[3].encode() * (1000 + i))
print("ready", flush=True)
sys.stdin.readline()                                   # both start uploading together
store.commit(tmp, "sft", sys.argv[4], {"writer": sys.argv[3]}, {"examples": 1, "steps": 1,
             "final_loss": 1.0, "device": "cpu", "train_tokens": 7})
"""


def test_concurrent_writers_never_publish_a_mix(s3, tmp_path):
    writers = [start_group([sys.executable, "-c", CONCURRENT, s3, str(tmp_path / name), name,
                            KEY], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           text=True)
               for name in ("A", "B")]
    try:
        for writer in writers:                         # both have written their shards
            assert writer.stdout.readline().strip() == "ready"
        for writer in writers:
            writer.stdin.write("go\n")
            writer.stdin.flush()
        assert [w.wait(timeout=60) for w in writers] == [0, 0]
    finally:
        for writer in writers:
            end_group(writer)
    store = ObjectStore(s3, tmp_path / "reader")
    files = stage_files(store.local_dir("sft", KEY))
    winner = {content.decode()[0] for content in files.values()}
    assert len(files) == 40 and len(winner) == 1                       # one writer's, whole
    assert store.spec("sft", KEY) == {"writer": winner.pop()}
    assert done_record(store, "sft", KEY)["attempt"] in attempts(store, "sft", KEY)


def test_an_altered_object_is_refused_by_name(s3, tmp_path):
    publish(ObjectStore(s3, tmp_path / "writer"), {"model.bin": b"weights" * 100})
    store = ObjectStore(s3, tmp_path / "reader")
    attempt = done_record(store, "sft", KEY)["attempt"]
    target = f"{store.base}/sft/{KEY[:16]}/{ATTEMPTS}/{attempt}/model.bin"
    store.fs.pipe_file(target, b"WEIGHTS" * 100)                 # same size, other bytes
    with pytest.raises(CorruptArtifact) as raised:
        store.load("sft", KEY)
    message = str(raised.value)
    assert f"{s3}/sft/{KEY[:16]}/{ATTEMPTS}/{attempt}/model.bin" in message
    assert "sha256" in message and "\n" not in message
    assert not store.path("sft", KEY).exists()                   # nothing half-trusted kept


# The pool and the evaluation where the `generator` is (node a), SFT where the `trainer` is
# (the head, 1 CPU: base_model's 2 go to a): SFT reads the base model and the evaluation
# reads the SFT model from the other node.
PLACED = ("cluster.resources.teacher_generate.custom_resource=generator",
          "cluster.resources.evaluate.custom_resource=generator",
          "cluster.resources.sft.custom_resource=trainer")


# A base model pre-trained on fewer documents: the store, not the model, is under test here.
SHORTER = ("model.pretrain_docs=400", "model.tokenizer_docs=400")


def cached_keys(cache: Path) -> set[tuple[str, str]]:
    """(stage, key[:16]) of every artifact materialised in a node's cache."""
    return {(done.parent.parent.name, done.parent.name) for done in cache.glob(f"*/*/{DONE}")
            if not done.parent.name.startswith(".")}


def without_models(plan) -> set[tuple[str, str]]:
    """cached_keys of a driver that read every stage of `plan`: the stages that save a
    model as copies without it (PARTIAL), the others whole."""
    return {(s.stage, s.key[:16] + (PARTIAL if s.stage in ("base_model", "sft") else ""))
            for s in plan.specs}


@pytest.mark.slow
def test_the_smoke_sweep_on_s3_across_nodes_publishes_and_reruns_from_the_bucket(
        s3, tmp_path, monkeypatch):
    """Two Ray nodes with no shared folder, each with its own cache: every stage reads its
    inputs downloaded on its own node, all 4 are published to the bucket, MLflow's artifacts
    go there too; a re-run from a driver with an empty cache computes nothing and writes the
    same results.csv; the S3 secret is written nowhere."""
    caches = {name: tmp_path / f"cache-{name}" for name in ("head", "a", "driver", "again")}
    nodes = LocalCluster()
    try:
        for name, cpus, resources in (("head", 1, {"trainer": 1}), ("a", 2, {"generator": 1})):
            nodes.env["SYNTHSCALE_ARTIFACT_CACHE"] = str(caches[name])
            if name == "head":
                nodes.start_head(cpus, resources, dashboard=False)
            else:
                nodes.add_worker(name, cpus, resources)
        out = tmp_path / "run"
        placement = (f"cluster.artifacts={s3}/artifacts", f"tracking.artifact_location={s3}/mlflow",
                     "analysis.enabled=false", *SHORTER, *PLACED)
        monkeypatch.setenv("SYNTHSCALE_ARTIFACT_CACHE", str(caches["driver"]))
        first = Sweep(out, *placement, f"cluster.address=127.0.0.1:{nodes.port}")
        assert first.finish(timeout=400) == 0, first.text[-3000:]
        node_of = {node.node_id: node.name for node in nodes.nodes}
    finally:
        nodes.stop()
    assert "(4 run, 0 cached)" in first.text, first.text[-2000:]
    results = (out / "results.csv").read_text()

    store = ObjectStore(f"{s3}/artifacts", tmp_path / "reader")
    plan = expand_grid(load_config(ROOT / "experiments" / "smoke.yaml",
                                   [*SMALL, *SHORTER, *PLACED]))
    assert all(store.is_done(spec.stage, spec.key) for spec in plan.specs)
    assert not (out / "artifacts").exists()                        # nothing beside the run
    runs = {r.data.tags["cache_key"]: node_of[r.data.tags["node_id"]]
            for r in stage_runs(f"sqlite:///{out}/mlflow.db", "smoke")
            if r.data.tags.get("synthscale_kind") == "stage"}
    for spec in plan.specs:                     # each stage's inputs were on its own node
        here = cached_keys(caches[runs[spec.key]])
        assert (spec.stage, spec.key[:16]) in here
        assert {(plan.get(k).stage, k[:16]) for _, k in spec.inputs} <= here, (spec.id, here)
    evaluate = next(s for s in plan.specs if s.stage == "evaluate")
    sft = plan.get(dict(evaluate.inputs)["model"])
    assert runs[evaluate.key] == "a" != runs[sft.key]              # a model from another node
    assert runs[plan.get(dict(sft.inputs)["base"]).key] == "a"     # and the other way
    assert cached_keys(caches["driver"]) == without_models(plan)   # the driver reads them all
    assert not list(caches["driver"].glob(f"*/*/{Files.MODEL}"))   # but never a model
    mlflow_objects = store.fs.find(f"{BUCKET}/{s3.split('/')[-1]}/mlflow")
    assert any(path.endswith("predictions.jsonl") for path in mlflow_objects), mlflow_objects

    (out / "results.csv").unlink()
    monkeypatch.setenv("SYNTHSCALE_ARTIFACT_CACHE", str(caches["again"]))
    again = Sweep(out, *placement)
    assert again.finish(timeout=300) == 0, again.text[-3000:]
    assert "every stage is cached" in again.text and "(0 run, 4 cached)" in again.text
    assert (out / "results.csv").read_text() == results, (results, first.text, again.text)
    assert cached_keys(caches["again"]) == without_models(plan)     # read from the bucket alone
    assert not list(caches["again"].glob(f"*/*/{Files.MODEL}"))
    assert _files_with({"AWS_SECRET_ACCESS_KEY": SECRET}, [tmp_path]) == []
    objects = [store.fs.cat_file(p) for p in store.fs.find(f"{BUCKET}/{s3.split('/')[-1]}")]
    assert not [data for data in objects if SECRET.encode() in data]

    # The evaluation's predictions altered in the bucket: a driver that has to download them
    # stops with one line naming the object, and writes no table from them.
    attempt = done_record(store, "evaluate", evaluate.key)["attempt"]
    target = f"{store.base}/evaluate/{evaluate.key[:16]}/{ATTEMPTS}/{attempt}/predictions.jsonl"
    store.fs.pipe_file(target, store.fs.cat_file(target).replace(b'"', b"'"))
    (out / "results.csv").unlink()
    monkeypatch.setenv("SYNTHSCALE_ARTIFACT_CACHE", str(tmp_path / "cache-corrupt"))
    broken = Sweep(out, *placement)
    assert broken.finish(timeout=300) == 1, broken.text[-3000:]
    errors = [line for line in broken.lines if line.startswith("error:")]
    assert len(errors) == 1 and "predictions.jsonl: sha256" in errors[0], broken.text[-3000:]
    assert "re-run" not in errors[0] and not (out / "results.csv").exists()
