"""Exposure (issue 12): every server the project starts listens on loopback
only, seen from the kernel's table of listening sockets (psutil), not from the
command lines; and `trust_remote_code` stays off unless a config turns it on.

Servers checked: the local Ray of a sweep (GCS, raylet, workers, agents, started
through `runner.ray_session` in a fresh interpreter, as `sweep` does), the
MLflow UI (`python -m orchestrator ui`) and the test suite's MLflow server
(cluster/mlflow-server.sh).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.config import Config, load_config
from orchestrator.processes import end_group, start_group

from ..conftest import ROOT, free_port, run_command

LOOPBACK = ("127.", "::1", "::ffff:127.")

# A fresh interpreter (ray not yet imported, as in `python -m orchestrator sweep`):
# start the sweep's local Ray, run one task so a worker exists, list what listens.
RAY_CHILD = """
import json, os, sys, psutil
from orchestrator.config import load_config
from orchestrator.runner import ray_session
config = load_config("experiments/smoke.yaml", ["grid.data_types=[sft_teacher]", "grid.sizes=[100]",
                                                f"experiment.output_dir={sys.argv[1]}"])
with ray_session(config):
    import ray
    ray.get(ray.remote(lambda: os.getpid()).remote())
    me = psutil.Process()
    mine = {p.pid: p.name() for p in [me, *me.children(recursive=True)]}
    sockets = [[c.laddr.ip, c.laddr.port, mine[c.pid]] for c in psutil.net_connections("inet")
               if c.status == psutil.CONN_LISTEN and c.pid in mine]
print(json.dumps(sockets))
"""


def _exposed(sockets: list[list]) -> list[list]:
    return [s for s in sockets if not str(s[0]).startswith(LOOPBACK)]


@pytest.mark.slow
def test_a_sweeps_local_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    start = time.monotonic()
    proc = run_command([sys.executable, "-c", RAY_CHILD, tmp_path], timeout=300, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sockets = json.loads(proc.stdout.strip().splitlines()[-1])
    names = {name for _, _, name in sockets}
    # the inspection saw Ray's servers: GCS, raylet and at least one worker or agent
    assert {"gcs_server", "raylet"} <= names, sockets
    assert len(sockets) >= 4, sockets
    assert not _exposed(sockets), f"Ray listens beyond loopback: {_exposed(sockets)}"
    print(f"\nlocal Ray: {len(sockets)} listening sockets ({', '.join(sorted(names))}), all "
          f"loopback, {time.monotonic() - start:.0f}s")


def _listening_below(leader: subprocess.Popen) -> list[list]:
    """Listening sockets of `leader` and every descendant (the UI's mlflow runs in a
    process group of its own, under the CLI)."""
    try:
        root = psutil.Process(leader.pid)
        pids = {p.pid: p.name() for p in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        return []
    return [[c.laddr.ip, c.laddr.port, pids[c.pid]] for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and c.pid in pids]


def _in_group(process: psutil.Process, group: int) -> bool:
    try:
        return os.getpgid(process.pid) == group
    except (ProcessLookupError, PermissionError):
        return False


@pytest.mark.slow
def test_the_mlflow_ui_listens_on_loopback_only(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(f"experiment:\n  name: ui\n  output_dir: {tmp_path / 'out'}\n")
    port = free_port()
    log = (tmp_path / "ui.log").open("w")
    ui = start_group([sys.executable, "-m", "orchestrator", "ui", str(config), "--port", str(port)],
                     cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        sockets, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and not any(p == port for _, p, _ in sockets):
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()[-2000:]
            time.sleep(0.5)
            sockets = _listening_below(ui)
        assert any(p == port for _, p, _ in sockets), (tmp_path / "ui.log").read_text()[-2000:]
        assert not _exposed(sockets), f"the MLflow UI listens beyond loopback: {sockets}"
    finally:
        end_group(ui)
        log.close()


@pytest.mark.slow
def test_the_suites_mlflow_server_listens_on_loopback_only(mlflow_server):
    port = int(mlflow_server.rsplit(":", 1)[1])
    owners = {c.pid for c in psutil.net_connections("inet")
              if c.status == psutil.CONN_LISTEN and c.laddr.port == port}
    assert owners
    groups = {os.getpgid(pid) for pid in owners}
    sockets = [[c.laddr.ip, c.laddr.port] for c in psutil.net_connections("inet")
               if c.status == psutil.CONN_LISTEN and c.pid
               and _in_group(psutil.Process(c.pid), next(iter(groups)))]
    assert not _exposed(sockets), f"the MLflow server listens beyond loopback: {sockets}"


# ---------------------------------------------------------------- trust_remote_code


def test_trust_remote_code_defaults_off():
    assert Config().model.trust_remote_code is False
    assert Config().model.loading.trust_remote_code is False
    for path in sorted((ROOT / "experiments").rglob("*.yaml")):
        says_so = "trust_remote_code: true" in path.read_text().lower()
        assert load_config(path).model.trust_remote_code is says_so, path


def test_every_model_load_passes_trust_remote_code_explicitly():
    """transformers' and vLLM's loaders, wherever the package calls them, get the
    config's flag (a call without it would silently follow the library's default)."""
    loaders = {"from_pretrained", "LLM"}
    calls = []
    for path in (ROOT / "orchestrator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                if name in loaders:
                    calls.append((path.name, node.lineno, {k.arg for k in node.keywords}))
    assert calls
    missing = [(f, line) for f, line, keys in calls if "trust_remote_code" not in keys]
    assert not missing, missing


def test_a_model_shipping_code_is_not_run_by_default(tmp_path):
    """A model folder whose config names its own Python code: loading it with the
    default config refuses, and the code never runs."""
    from orchestrator.modeling import load_causal_lm

    folder = tmp_path / "evil-model"
    folder.mkdir()
    marker = tmp_path / "RAN"
    code = f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import PretrainedConfig\n" \
           f"class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    (folder / "configuration_evil.py").write_text(code)
    (folder / "modeling_evil.py").write_text(code)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForCausalLM": "modeling_evil.EvilModel"}}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_causal_lm(str(folder), Config().model.loading, "cpu")
    assert not marker.exists(), "the model's own code ran without trust_remote_code"
    assert not any(Path(p).name == "configuration_evil.py" for p in sys.modules)
