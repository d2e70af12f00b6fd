"""A real multi-node Ray cluster on 127.0.0.1 for the tests: a head and worker nodes,
each started by its own `ray start` (not `ray.init`, not ray.cluster_utils), as on a
cluster. Not a test module: imported by test_multinode.py.

`ray start` returns once its node's daemons (GCS, raylet, dashboard, agents) run in the
background; they, and every worker process their raylet forks, stay in the session that
`start_group` gave the `ray start` process. So a node is its session: ending the session
ends the node and nothing else, where `ray stop` would end every Ray of this user on the
machine (other tests' and engineers' included), and SIGKILL to the session is a node lost
at once (raylet, agents and the stages running there).

Nodes on one host need distinct ports: each gets its own node-manager, object-manager,
metrics and agent ports; worker ports are left to the OS (0), since every node's default
range is the same 10002-19999. Each has a temp dir of its own, as on separate machines:
with one shared temp dir the nodes' runtime-env agents share `runtime_resources/`, and a
worker node's agent deleted the working dir a `ray job submit` driver was running in on
the head (seen with Ray 2.60). The dirs are short: Unix socket paths have 107 bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.processes import end_group, session_members, start_group

from ..conftest import free_port

RAY = str(Path(sys.executable).parent / "ray")
START_TIMEOUT_S = 120           # one `ray start` on 2 busy cores: 5-15 s
# What a node of this project's tests must not do: phone home or write a token to $HOME.
QUIET = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
         "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1"}


@dataclass
class Node:
    name: str
    process: subprocess.Popen       # the `ray start`; its pid is the node's session id
    resources: dict = field(default_factory=dict)
    num_cpus: int = 1
    node_id: str = ""               # Ray's node id, read from the raylet's command line

    @property
    def members(self) -> list[int]:
        return session_members(self.process.pid)

    def alive(self) -> bool:
        return bool(self.members)


class LocalCluster:
    """A Ray head plus worker nodes on 127.0.0.1; `stop()` ends every process it started."""

    def __init__(self, extra_pythonpath: str = ""):
        self.temp_dir = tempfile.mkdtemp(prefix="ssr-ray-", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = 0
        self.nodes: list[Node] = []
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | QUIET
        if extra_pythonpath:
            self.env["PYTHONPATH"] = os.pathsep.join(
                filter(None, [extra_pythonpath, self.env.get("PYTHONPATH")]))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self, num_cpus: int, resources: dict, dashboard: bool) -> Node:
        args = ["--head", f"--port={self.port}",
                f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host=127.0.0.1"]
        if self._importable("grpc"):
            # ray[client] is there: the head starts a client server, by default on 10001.
            args.append(f"--ray-client-server-port={free_port()}")
        if dashboard:
            self.dashboard_port = free_port()
            args.append(f"--dashboard-port={self.dashboard_port}")
        return self._start("head", num_cpus, resources, args)

    def _importable(self, module: str) -> bool:
        probe = subprocess.run([sys.executable, "-c", f"import {module}"], env=self.env,
                               capture_output=True, timeout=60)
        return probe.returncode == 0

    def add_worker(self, name: str, num_cpus: int, resources: dict) -> Node:
        return self._start(name, num_cpus, resources, [f"--address={self.address}"])

    def _start(self, name: str, num_cpus: int, resources: dict, args: list[str]) -> Node:
        ports = [f"--{p}={free_port()}" for p in (
            "node-manager-port", "object-manager-port", "metrics-export-port",
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port")]
        command = [RAY, "start", *args, "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                   "--num-gpus=0", f"--resources={json.dumps(resources)}",
                   "--min-worker-port=0", "--max-worker-port=0",
                   f"--temp-dir={self.node_temp_dir(name)}",
                   "--object-store-memory=100000000", "--disable-usage-stats", *ports]
        log = Path(self.temp_dir) / f"start-{name}.log"
        with log.open("w") as out:
            process = start_group(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        node = Node(name, process, resources, num_cpus)
        self.nodes.append(node)         # tracked before waiting: stop() must end it either way
        try:
            code = process.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`ray start` ({name}) did not return in {START_TIMEOUT_S} s: "
                                 f"{log.read_text()[-2000:]}") from None
        assert code == 0, f"`ray start` ({name}) exited {code}: {log.read_text()[-3000:]}"
        node.node_id = self._raylet_node_id(node)
        return node

    @staticmethod
    def _raylet_node_id(node: Node) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in node.members:
                with contextlib.suppress(OSError):
                    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                    if argv and argv[0].endswith(b"/raylet"):
                        ids = [a for a in argv if a.startswith(b"--node_id=")]
                        return ids[0].split(b"=", 1)[1].decode()
            time.sleep(0.2)
        raise AssertionError(f"no raylet in node {node.name}'s session")

    def node_temp_dir(self, name: str) -> Path:
        return Path(self.temp_dir) / name

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def by_id(self) -> dict[str, str]:
        return {n.node_id: n.name for n in self.nodes}

    def running_stage(self, title_prefix: str) -> Node | None:
        """The worker node (not the head) whose session runs a Ray worker titled
        `ray::<title_prefix>...` (Ray's process title while it runs a task named so)."""
        for node in self.nodes[1:]:
            for pid in node.members:
                with contextlib.suppress(OSError):
                    title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                    if title.startswith(f"ray::{title_prefix}".encode()):
                        return node
        return None

    def kill(self, node: Node) -> None:
        """The node is lost: SIGKILL to its raylet, agents and workers at once."""
        for _ in range(3):          # a worker forked meanwhile gets the next round
            for pid in node.members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        assert not node.alive(), f"node {node.name} still has {node.members}"

    def stop(self) -> None:
        """Worker nodes first, the head (GCS) last; then the temp dir."""
        for node in reversed(self.nodes):
            end_group(node.process)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
