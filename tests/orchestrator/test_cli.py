"""The command line as a user meets it: exit codes, one-line errors, real processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from mlflow.tracking import MlflowClient

from ..conftest import ROOT, alive, as_from_a_terminal, free_port, run_command


def cli(*args, timeout=300):
    return run_command([sys.executable, "-m", "orchestrator", *args], timeout, cwd=ROOT)


def test_grade_writes_verdicts_and_prints_accuracy(tmp_path):
    source = tmp_path / "preds.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in [
        {"completion": "3 + 4 = 7\n#### 7", "answer": "#### 7"},
        {"completion": "The answer is 8.", "answer": 7},
    ]) + "\n")
    proc = cli("grade", source, "--task", "gsm8k", "--out", tmp_path / "graded.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert "accuracy 0.5000" in proc.stdout
    graded = [json.loads(line) for line in (tmp_path / "graded.jsonl").read_text().splitlines()]
    assert [g["correct"] for g in graded] == [True, False] and graded[1]["extracted"] == "8"


def test_grade_rejects_bad_input_with_file_and_line(tmp_path):
    source = tmp_path / "preds.jsonl"
    source.write_text('{"completion": "#### 1", "answer": "1"}\n{"answer": "2"}\n')
    proc = cli("grade", source, "--task", "gsm8k", "--out", tmp_path / "g.jsonl")
    assert proc.returncode == 2
    assert proc.stderr.strip() == 'error: preds.jsonl:2: missing field "completion"'


def test_show_renders_step_values_and_the_pit(tmp_path):
    folder = tmp_path / "rollouts" / "abc"
    folder.mkdir(parents=True)
    row = {"problem_id": "p1", "sample_index": 0, "prompt": "Question: Mia has 7.\nAnswer:\n",
           "answer": "9", "steps": ["7 + 5 = 12", "12 + 3 = 15", "#### 15"],
           "values": [0.75, 0.75, 0.0, 0.0], "advantages": [0.0, -0.75, 0.0],
           "successes": [], "continuations": []}
    (folder / "rollouts.jsonl").write_text(json.dumps(row) + "\n")
    (folder / "result.json").write_text(json.dumps({"negatives": 1}))
    proc = cli("show", folder)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    pit_line = next(line for line in lines if "12 + 3 = 15" in line)
    assert "-0.75" in pit_line and "<- first_zero" in pit_line and "<- min_advantage" in pit_line
    assert "1 records" in proc.stdout


def test_show_errors_are_one_line(tmp_path):
    proc = cli("show", tmp_path / "nowhere")
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    proc = cli("show", ROOT / "experiments" / "smoke.yaml", f"experiment.output_dir={tmp_path}",
               "--stage", "rollouts")
    assert proc.returncode == 2 and "has not run yet" in proc.stderr


def _wait_for_health(port: int, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                assert reply.status == 200
                return
        except OSError:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.5)
    pytest.fail("the MLflow UI did not come up")


def _listening_on(port: int) -> bool:
    return any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections(kind="inet"))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_ui_serves_the_sweep_store_and_a_signal_ends_all_of_it(tmp_path, signum):
    """The UI comes up on loopback; one signal to the command ends the MLflow
    server with every uvicorn worker and huey consumer, frees the port and
    exits 128 + signal (issue 16: they used to stay, reparented to init)."""
    port = free_port()
    # A session of its own stands in for a terminal: Ctrl-C goes to its whole
    # foreground group, `kill -TERM` and a closed terminal's SIGHUP to the command.
    command = [sys.executable, "-m", "orchestrator", "ui", "experiments/smoke.yaml",
               f"experiment.output_dir={tmp_path}", "--port", port]
    proc = subprocess.Popen(as_from_a_terminal(command), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    pids: set[int] = set()
    try:
        _wait_for_health(port, proc)
        server = psutil.Process(proc.pid).children()[0]
        pids = {server.pid} | {p.pid for p in server.children(recursive=True)}
        assert len(pids) >= 3 and os.getsid(server.pid) == server.pid    # a session of its own
        started = time.monotonic()
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        assert proc.wait(timeout=30) == 128 + signum
        exited = time.monotonic() - started
        assert not alive(pids), [psutil.Process(p).cmdline() for p in alive(pids)]
        assert not [p for p in psutil.process_iter() if _in_session(p, server.pid)]
        assert not _listening_on(port)
        print(f"{signal.Signals(signum).name}: the ui command and its {len(pids)} server "
              f"processes were gone {exited:.2f} s after the signal")
        assert exited < 15
        assert f"MLflow UI on port {port} stopped" in proc.stdout.read()
    finally:      # the test failed: end what it started the hard way
        for pid in alive(pids | {proc.pid}):
            os.kill(pid, signal.SIGKILL)
        proc.wait()


def _in_session(process: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(process.pid) == sid and process.status() != psutil.STATUS_ZOMBIE
    except (OSError, psutil.Error):
        return False


def test_ui_refuses_a_taken_port_and_names_its_holder(tmp_path):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = cli("ui", "experiments/smoke.yaml", f"experiment.output_dir={tmp_path}",
                   "--port", port, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith(f"error: --port {port}: 127.0.0.1:{port} is already in use by pid "
                            f"{os.getpid()} ("), error
    assert f"`kill -TERM -- -{os.getpgid(0)}`" in error and "\n" not in error
    assert "MLflow UI for" not in proc.stdout        # nothing was started


@pytest.mark.slow
def test_a_failing_stage_fails_the_sweep_and_skips_what_depends_on_it(tmp_path):
    # A GPU node without vLLM (one fake GPU on the local Ray, which the generating stages
    # ask for): every generating stage fails with the install hint, training stages still
    # finish, nothing is faked.
    gpu = [f"cluster.resources.{group}.num_gpus=1" for group in ("sample", "rollouts", "evaluate")]
    proc = cli("sweep", "experiments/smoke.yaml", f"experiment.output_dir={tmp_path}",
               "generation.backend=vllm", "grid.data_types=[sft_teacher,rft_self]",
               "grid.sizes=[100]", "cluster.num_gpus=1", *gpu)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED evaluate[sft_teacher,n=100,seed=0]" in proc.stdout
    assert "install the GPU stack" in proc.stdout
    assert "skipped evaluate[rft_self,n=100,seed=0] (upstream sample[n=100,seed=0] failed)" in proc.stdout
    assert (tmp_path / "artifacts" / "sft").exists()                 # the SFT model did finish
    assert (tmp_path / "results.csv").read_text().count("\n") == 1    # header only: no faked rows
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    sweep = next(r for r in runs if r.data.tags["synthscale_kind"] == "sweep")
    assert sweep.info.status == "FAILED"


@pytest.mark.slow
def test_a_request_no_local_node_can_hold_is_a_config_error_not_a_hang(tmp_path):
    proc = cli("sweep", "experiments/smoke.yaml", f"experiment.output_dir={tmp_path}",
               "cluster.resources.sft.num_gpus=1", timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: cluster.resources.sft: sft[n=100,seed=0] asks for 1 CPUs, 1 GPUs")
    assert "which no node has (largest node: " in error and "RAY_ADDRESS" in error
    assert not (tmp_path / "mlflow.db").exists()                     # nothing was tracked

