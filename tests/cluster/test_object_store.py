"""Artifacts on object storage (issue 13): the store's protocol on a real S3-compatible
server (moto's server mode, a process on 127.0.0.1) and, where no server is needed,
on fsspec's in-memory filesystem. Readers trust only DONE, which names one complete
attempt: a killed writer leaves nothing trusted, racing writers never publish a mix, an
altered object is refused by name, and the smoke sweep publishes, re-runs from the bucket
alone, and sends its MLflow artifacts to the same bucket."""

from __future__ import annotations

import json
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
from orchestrator.config_schema import ConfigError
from orchestrator.contract import Files
from orchestrator.object_store import ATTEMPTS, PARTIAL, CorruptArtifact, ObjectStore
from orchestrator.planning import expand_grid
from orchestrator.processes import end_group, start_group
from orchestrator.store import DONE, manifest, open_store, run_cached

from ..conftest import ROOT, free_port
from ..faults.sweep_process import SMALL, Sweep, stage_runs
from ..faults.test_secrets import _files_with
from .ray_nodes import LocalCluster

pytest.importorskip("s3fs", reason="the s3 extra (s3fs) is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")

KEY = "ab" * 32
BUCKET = "synthscale-test"
SECRET = f"SECRET-{uuid.uuid4().hex}"


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


# ---------------------------------------------------------------- a real S3 server


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
