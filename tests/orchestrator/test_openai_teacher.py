"""The `openai` teacher end to end (issue 14): a real `transformers serve` on 127.0.0.1
serving a tiny model from a local folder, the official `openai` client, and a counting
reverse proxy in between (stdlib http.server), so every request counted, and every 429,
is real HTTP.

The served model is the tiny Llama, trained here for a few seconds to recite the oracle
solutions of the task's training problems, so the teacher's answers pass the answer filter.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from orchestrator.config import config_from_dict
from orchestrator.contract import RESPONSES
from orchestrator.gc import survey
from orchestrator.planning import expand_grid
from orchestrator.processes import end_group, start_group
from orchestrator.records import read_rows
from orchestrator.store import ArtifactStore, run_cached
from orchestrator.tasks import format_prompt, make_task
from orchestrator.verify import verify_store

from ..conftest import ROOT, free_port, run_command, wait_until_healthy
from ..faults.test_secrets import _files_with, _ray_sessions

pytestmark = pytest.mark.slow

KEY_VAR = "SYNTHSCALE_TEST_OPENAI_KEY"
KEY = f"SECRET-{KEY_VAR}-{uuid.uuid4().hex}"
N_TRAIN, POOL, SAMPLES = 10, 6, 2          # every request: N_TRAIN * SAMPLES
TASK = {"n_train": N_TRAIN, "n_test": 1, "min_steps": 1, "max_steps": 1, "max_value": 20}


def teacher_config(base_url: str, model: str, **openai) -> dict:
    return {"experiment": {"name": "openai-teacher"},
            "task": TASK, "grid": {"sizes": [POOL]},
            "teacher": {"kind": "openai", "model": model, "samples_per_problem": SAMPLES,
                        "temperature": 0.7, "max_new_tokens": 96},
            "openai": {"base_url": base_url, "api_key_env": KEY_VAR, "max_concurrency": 4,
                       **openai}}


def teacher_spec(raw: dict):
    return next(s for s in expand_grid(config_from_dict(raw)).specs if s.stage == "teacher_generate")


# ---------------------------------------------------------------- the served model


def train_reciter(folder: Path) -> None:
    """A tiny Llama that recites each training problem's oracle solution after its prompt."""
    import torch

    from orchestrator.tiny_model import TinyLlamaSpec, build_tiny_llama, train_tokenizer

    source = config_from_dict({"task": TASK, "grid": {"sizes": [POOL]}}).task.source
    task = make_task(source, n_train=N_TRAIN, n_test=0)
    prompts = [format_prompt(task.prompt_template, p.question) for p in task.split("train")]
    texts = [prompt + p.solution for prompt, p in zip(prompts, task.split("train"), strict=True)]
    tokenizer = train_tokenizer(texts, 160)
    # endpoint: chat wraps nothing around the prompt, so the chat answer is the completion one
    tokenizer.chat_template = "{{ messages[0]['content'] }}"
    model = build_tiny_llama(tokenizer, TinyLlamaSpec(hidden_size=64, num_layers=2, num_heads=2,
                                                      intermediate_size=128), seed=0)
    rows = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(ids == tokenizer.pad_token_id, -100)
    for row, prompt in zip(labels, prompts, strict=True):     # the loss is on solutions only
        row[:len(tokenizer(prompt)["input_ids"])] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # ~90 steps: 6 s on one thread, minutes on two busy cores
    try:
        for _ in range(250):
            loss = model(input_ids=ids, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if loss.item() < 0.01:
                break
    finally:
        torch.set_num_threads(threads)
    model.generation_config.do_sample = False    # the server then decodes greedily
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def served_model(tmp_path_factory):
    """(URL of `transformers serve` on 127.0.0.1, the model folder it serves, its log)."""
    home = tmp_path_factory.mktemp("served")
    folder = home / "reciter"
    train_reciter(folder)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"), "OMP_NUM_THREADS": "1"}
    env.pop(KEY_VAR, None)                      # the server never sees the key's variable
    log = home / "serve.log"
    with log.open("w") as handle:
        proc = start_group([str(Path(sys.executable).parent / "transformers"), "serve",
                            str(folder), "--host", "127.0.0.1", "--port", str(port),
                            "--device", "cpu", "--log-level", "info"],
                           env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=home)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, url, log, "transformers serve", timeout_s=120)
        yield url, str(folder), log
    finally:
        end_group(proc)


# ---------------------------------------------------------------- the counting proxy


class Proxy:
    """Forwards POSTs to the server and counts them; answers `storm_status` (429 with
    Retry-After 0.05 s, or a 5xx) to the next `storm` requests, or `refuse`s with a 401
    whose body quotes the key, as some APIs do."""

    def __init__(self, upstream: str):
        self.upstream, self.lock = upstream, threading.Lock()
        self.reset()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, payload, headers = proxy.answer(self.path, body,
                                                        self.headers.get("authorization", ""))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):    # the client was killed
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self, storm: int = 0, storm_status: int = 429, refuse: bool = False) -> None:
        with self.lock:
            self.forwarded, self.throttled, self.storm, self.refuse = 0, 0, storm, refuse
            self.storm_status = storm_status
            self.paths, self.keys, self.in_flight = [], set(), 0

    def answer(self, path: str, body: bytes, authorization: str):
        with self.lock:
            self.keys.add(authorization.removeprefix("Bearer "))
            if self.refuse:
                return 401, json.dumps({"error": {"message": f"Incorrect API key provided: "
                                                             f"{authorization[7:]}"}}).encode(), {}
            if self.storm:
                self.storm -= 1
                self.throttled += 1
                headers = {"retry-after": "0.05"} if self.storm_status == 429 else {}
                return self.storm_status, b'{"error": {"message": "not now"}}', headers
            self.in_flight += 1
        request = urllib.request.Request(self.upstream + path, body,
                                         {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        with self.lock:
            self.forwarded += 1
            self.in_flight -= 1
            self.paths.append(path)
        return status, payload, {}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(served_model, monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)
    counting = Proxy(served_model[0])
    try:
        yield counting
    finally:
        counting.close()


def cached_lines(store: Path) -> int:
    lines = 0
    for shard in (store / RESPONSES).glob("*.jsonl"):
        lines += sum(1 for line in shard.read_text().splitlines() if line.endswith("}"))
    return lines


def files_with(needle: str, roots: list[Path]) -> list[str]:
    return _files_with({KEY_VAR: needle}, roots)


# ---------------------------------------------------------------- the tests


def test_the_pool_is_built_through_the_server_and_paid_for_once(tmp_path, proxy, served_model):
    store = ArtifactStore(tmp_path / "store")
    spec = teacher_spec(teacher_config(proxy.url, served_model[1]))
    params_text = json.dumps(dataclasses.asdict(spec.params))
    assert proxy.url in params_text and KEY_VAR in params_text and KEY not in params_text

    first = run_cached(store, spec, {})
    total = N_TRAIN * SAMPLES
    assert proxy.forwarded == total and set(proxy.paths) == {"/v1/completions"}
    assert proxy.keys == {KEY}                              # the key came from KEY_VAR
    assert (first.result.requests, first.result.cached_responses) == (total, 0)
    rows = read_rows(Path(first.artifact_dir) / "data.jsonl")
    assert len(rows) == POOL and first.result.kind == "openai"
    assert all(r["completion"].rstrip().endswith(f"#### {r['answer']}") for r in rows)
    assert cached_lines(store.root) == total

    proxy.reset()
    again = run_cached(store, spec, {})                     # the stage cache: no request
    assert again.cached and proxy.forwarded == 0

    Path(first.artifact_dir).rename(tmp_path / "published-before")   # the stage is lost...
    redone = run_cached(store, spec, {})                    # ...and recomputed from the cache
    assert not redone.cached and proxy.forwarded == 0
    assert (redone.result.requests, redone.result.cached_responses) == (0, total)
    assert read_rows(Path(redone.artifact_dir) / "data.jsonl") == rows

    checked, findings = verify_store(store.root)
    assert checked == 1 and findings == []                  # _responses/ is the store's own
    unused = [folder for folder, _ in survey(store.root, set()).unused]
    assert unused == [Path(redone.artifact_dir)]            # gc never offers the responses
    assert files_with(KEY, [tmp_path, served_model[2]]) == []


CHILD = """
import json, sys
from orchestrator.config import config_from_dict
from orchestrator.planning import expand_grid
from orchestrator.store import ArtifactStore, run_cached
spec = next(s for s in expand_grid(config_from_dict(json.loads(sys.argv[1]))).specs
            if s.stage == "teacher_generate")
run_cached(ArtifactStore(sys.argv[2]), spec, {})
"""


def test_a_killed_stage_pays_again_only_for_what_is_missing(tmp_path, proxy, served_model):
    raw = teacher_config(proxy.url, served_model[1], max_concurrency=1)
    store = tmp_path / "store"
    child = start_group([sys.executable, "-c", CHILD, json.dumps(raw), str(store)], cwd=ROOT,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while cached_lines(store) < N_TRAIN // 2:
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.time() < deadline, "no responses cached within 120 s"
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        end_group(child)
    while proxy.in_flight:          # a request the child sent before dying is still answered
        time.sleep(0.05)
    paid_before = proxy.forwarded
    kept = cached_lines(store)
    total = N_TRAIN * SAMPLES
    assert N_TRAIN // 2 <= kept < total and paid_before - kept <= 1   # at most the one in flight

    proxy.reset()
    outcome = run_cached(ArtifactStore(store), teacher_spec(raw), {})
    print(f"killed after {paid_before} of {total} requests, {kept} cached; "
          f"the re-run made {proxy.forwarded}")
    assert proxy.forwarded == total - kept
    assert (outcome.result.requests, outcome.result.cached_responses) == (total - kept, kept)
    assert len(read_rows(Path(outcome.artifact_dir) / "data.jsonl")) == POOL


@pytest.mark.parametrize("status", [429, 503])
def test_a_storm_of_429_or_503_is_survived_on_the_chat_endpoint(tmp_path, proxy, served_model,
                                                                 status):
    """12 answers 429 (Retry-After 0.05 s) or 503 (the client's backoff from 0.5 s) before
    any request reaches the server: even all 12 on one request are within max_retries."""
    raw = teacher_config(proxy.url, served_model[1], endpoint="chat", max_retries=12)
    proxy.reset(storm=12, storm_status=status)
    outcome = run_cached(ArtifactStore(tmp_path / "store"), teacher_spec(raw), {})
    print(f"{proxy.throttled} answers {status}, then {proxy.forwarded} forwarded")
    assert proxy.throttled == 12 and proxy.storm == 0
    assert proxy.forwarded == N_TRAIN * SAMPLES and set(proxy.paths) == {"/v1/chat/completions"}
    assert outcome.result.pool_size == POOL


def test_a_refused_key_is_one_line_without_the_key(tmp_path, proxy, served_model):
    raw = teacher_config(proxy.url, served_model[1], max_retries=0)
    proxy.reset(refuse=True)
    with pytest.raises(RuntimeError) as caught:
        run_cached(ArtifactStore(tmp_path / "store"), teacher_spec(raw), {})
    message = str(caught.value)
    assert "HTTP 401" in message and KEY_VAR in message and KEY not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_sweep_with_an_openai_teacher_keeps_the_key_out_of_everything(tmp_path, proxy,
                                                                        served_model):
    """The smoke sweep (sft_teacher, one size) with the teacher behind the proxy: the Ray
    worker reads the key from its environment, and neither MLflow, the store, Ray's logs nor
    the sweep's output hold it."""
    out = tmp_path / "out"
    before = _ray_sessions()
    proc = run_command([sys.executable, "-m", "orchestrator", "sweep", "experiments/smoke.yaml",
                        f"experiment.output_dir={out}", "grid.data_types=[sft_teacher]",
                        f"grid.sizes=[{POOL}]", f"task.n_train={N_TRAIN}", "task.max_steps=1",
                        "task.n_test=10", "model.pretrain_docs=0", "teacher.kind=openai",
                        f"teacher.model={served_model[1]}",
                        f"teacher.samples_per_problem={SAMPLES}", "teacher.max_new_tokens=96",
                        f"openai.base_url={proxy.url}", f"openai.api_key_env={KEY_VAR}",
                        "analysis.enabled=false"],
                       timeout=600, cwd=ROOT, env={**os.environ, KEY_VAR: KEY})
    (tmp_path / "stdout.txt").write_text(proc.stdout)
    (tmp_path / "stderr.txt").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proxy.forwarded == N_TRAIN * SAMPLES and proxy.keys == {KEY}
    assert (out / "mlflow.db").read_bytes().count(proxy.url.encode())    # params are logged
    assert files_with(KEY, [tmp_path, served_model[2],
                            *sorted(_ray_sessions() - before)]) == []
