"""`generation.backend: openai` end to end (issue 14): a student trained here is evaluated
through a real `transformers serve` on 127.0.0.1, started with no model, so it loads the
student from the folder path each request names; the official `openai` client and the
counting proxy of test_openai_teacher.py sit in between.

The same evaluation through the in-process `hf` backend is the reference: greedy decoding
of the same weights and tokenizer gives the same predictions on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.config import load_config
from orchestrator.planning import expand_grid
from orchestrator.records import read_rows
from orchestrator.store import ArtifactStore, run_cached

from ..conftest import ROOT, free_port, wait_until_healthy
from .test_openai_teacher import KEY, KEY_VAR, Proxy, cached_lines, files_with

pytestmark = pytest.mark.slow

N_TEST = 20
CELL = ("grid.data_types=[sft_teacher]", "grid.sizes=[100]", f"task.n_test={N_TEST}",
        "model.pretrain_docs=500")


@pytest.fixture(scope="module")
def path_server(tmp_path_factory):
    """(URL, log) of `transformers serve` with no model of its own: each request's `model`
    is loaded (and kept for a while) by that name, here a student's folder."""
    home = tmp_path_factory.mktemp("path-served")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home / "hf"), "OMP_NUM_THREADS": "1"}
    env.pop(KEY_VAR, None)
    log = home / "serve.log"
    from orchestrator.processes import end_group, start_group

    with log.open("w") as handle:
        proc = start_group([str(Path(sys.executable).parent / "transformers"), "serve",
                            "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                            "--log-level", "info"],
                           env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=home)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, url, log, "transformers serve", timeout_s=120)
        yield url, log
    finally:
        end_group(proc)


class ModelCountingProxy(Proxy):
    """The teacher tests' proxy, also recording the model each request names."""

    def reset(self, **kwargs) -> None:
        super().reset(**kwargs)
        self.models: list[str] = []

    def answer(self, path: str, body: bytes, authorization: str):
        with self.lock:
            self.models.append(json.loads(body).get("model", ""))
        return super().answer(path, body, authorization)


def run_all(store: ArtifactStore, plan, specs) -> dict[str, object]:
    outcomes = {}
    for spec in specs:
        inputs = {name: str(store.path(plan.get(key).stage, key)) for name, key in spec.inputs}
        outcomes[spec.id] = run_cached(store, spec, inputs)
    return outcomes


def test_a_student_is_evaluated_through_a_server_that_loads_it_by_path(tmp_path, path_server,
                                                                       monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)
    monkeypatch.setenv("SYNTHSCALE_TORCH_THREADS", "1")
    proxy = ModelCountingProxy(path_server[0])
    try:
        _check_the_served_evaluation(tmp_path, proxy, path_server[1])
    finally:
        proxy.close()


def _check_the_served_evaluation(tmp_path: Path, proxy: ModelCountingProxy, log: Path) -> None:
    root = tmp_path / "artifacts"
    config = load_config(ROOT / "experiments" / "smoke.yaml",
                         [*CELL, f"cluster.artifacts={root}", "generation.backend=openai",
                          f"openai.base_url={proxy.url}", f"openai.api_key_env={KEY_VAR}"])
    plan, store = expand_grid(config), ArtifactStore(root)
    evaluations = [s for s in plan.specs if s.stage == "evaluate"]
    assert evaluations and {s.stage for s in plan.specs} <= {"base_model", "teacher_generate",
                                                             "sft", "evaluate"}
    started = time.time()
    outcomes = run_all(store, plan, plan.specs)
    served_s = time.time() - started

    students = {str((store.path(plan.get(dict(s.inputs)["model"]).stage,
                                dict(s.inputs)["model"]) / "model").resolve())
                for s in evaluations}
    assert proxy.forwarded == N_TEST * len(evaluations)
    assert set(proxy.paths) == {"/v1/completions"} and proxy.keys == {KEY}
    assert set(proxy.models) == students            # each student by its own folder path
    assert cached_lines(root) == proxy.forwarded
    for spec in evaluations:
        result = outcomes[spec.id].result
        assert 0.0 <= result.test_error <= 1.0 and result.n_test == N_TEST
        assert result.generated_tokens > 0

    proxy.reset()
    again = run_all(store, plan, plan.specs)            # every stage cached: no request
    assert all(o.cached for o in again.values()) and proxy.forwarded == 0
    first = evaluations[0]
    published = Path(outcomes[first.id].artifact_dir)
    predictions = read_rows(published / "predictions.jsonl")
    published.rename(tmp_path / "published-before")     # the evaluation is lost...
    redone = run_all(store, plan, [first])[first.id]     # ...and redone from the responses
    assert not redone.cached and proxy.forwarded == 0
    assert read_rows(Path(redone.artifact_dir) / "predictions.jsonl") == predictions

    # the same student through the in-process hf backend: the same greedy predictions
    local = load_config(ROOT / "experiments" / "smoke.yaml",
                        [*CELL, f"cluster.artifacts={root}"])
    local_plan = expand_grid(local)
    local_eval = next(s for s in local_plan.specs if s.id == first.id)
    assert local_eval.key != first.key and local_eval.inputs == first.inputs
    reference = run_all(store, local_plan, [local_eval])[first.id]
    expected = read_rows(Path(reference.artifact_dir) / "predictions.jsonl")
    print(f"served evaluation stages {served_s:.1f} s; test_error served "
          f"{outcomes[first.id].result.test_error:.2f}, hf {reference.result.test_error:.2f}")
    assert [r["completion"] for r in predictions] == [r["completion"] for r in expected]
    assert outcomes[first.id].result.test_error == reference.result.test_error
    assert files_with(KEY, [tmp_path, log]) == []
