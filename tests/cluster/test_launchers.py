"""The cluster launchers in cluster/: each must start a cluster on first contact.

Checked here without a cluster: the Ray launcher YAML against Ray's own schema
and its `ray up` preparation, the KubeRay manifest's fields, the SLURM script
parsed and then run with stand-ins for srun, scontrol, hostname, ray and python,
and that every experiment config a launcher names exists and keeps its
artifacts on the filesystem the launcher shares between nodes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAY_LAUNCHER = CLUSTER / "ray-cluster.yaml"
KUBERAY = CLUSTER / "kuberay.yaml"
SLURM = CLUSTER / "slurm.sbatch"
LAUNCHERS = [RAY_LAUNCHER, KUBERAY, SLURM]
SHARED = "/shared"           # where the launchers put the filesystem every node sees


def named_configs(launcher: Path) -> list[str]:
    return sorted(set(re.findall(r"experiments/[\w./-]+\.yaml", launcher.read_text())))


def artifacts_of(config: str) -> str:
    return yaml.safe_load((ROOT / config).read_text())["cluster"]["artifacts"]


@pytest.mark.parametrize("launcher", LAUNCHERS, ids=lambda p: p.name)
def test_every_config_a_launcher_names_exists_and_keeps_artifacts_on_the_shared_path(launcher):
    configs = named_configs(launcher)
    assert configs, f"{launcher.name} names no experiment config to run"
    for config in configs:
        assert (ROOT / config).is_file(), f"{launcher.name} names {config}, which does not exist"
        assert artifacts_of(config).startswith(SHARED + "/"), (
            f"{config}: cluster.artifacts is not under {SHARED}, which {launcher.name} shares")


# --- Ray cluster launcher ---------------------------------------------------------

def ray_launcher() -> dict:
    return yaml.safe_load(RAY_LAUNCHER.read_text())


def test_ray_launcher_matches_rays_own_schema():
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(ray_launcher(), json.loads(schema_path.read_text()))


def test_ray_launcher_survives_ray_ups_preparation():
    """What `ray up` does to the file before it touches a node: the local
    provider's checks (head and worker IPs), defaults, the schema again."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(ray_launcher())
    validate_config(prepared)
    assert prepared["available_node_types"], "ray up found no node type to start"


def test_ray_launcher_runs_the_projects_ray_with_a_key_and_a_shared_filesystem():
    config = ray_launcher()
    remote_dir = next(iter(config["file_mounts"]))
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for command in commands:
        for prefix in re.findall(r"(\S*)\bray (?:start|stop)\b", command):
            assert prefix == f"{remote_dir}/.venv/bin/", (
                f"`{command}` runs a ray that is not the project venv's ({remote_dir}/.venv)")
    assert config["auth"].get("ssh_private_key"), "no SSH key: the head cannot reach the workers"
    assert any("mount -t nfs" in c and c.rstrip().endswith(SHARED)
               for c in config["initialization_commands"]), f"no shared filesystem at {SHARED}"
    assert any("make install-gpu" in c for c in config["setup_commands"])


def test_make_has_the_target_the_ray_launcher_installs_with():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "-n", "install-gpu", "VENV=/nonexistent/venv"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- KubeRay ----------------------------------------------------------------------

def kuberay_groups() -> list[tuple[str, dict]]:
    spec = yaml.safe_load(KUBERAY.read_text())["spec"]
    return [("head", spec["headGroupSpec"])] + [
        (group["groupName"], group) for group in spec["workerGroupSpecs"]]


def test_kuberay_manifest_is_a_raycluster_of_the_pinned_ray(gpu_pins):
    manifest = yaml.safe_load(KUBERAY.read_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["spec"]["rayVersion"] == gpu_pins["ray"], (
        "rayVersion must be the Ray that `make install-gpu` puts in the image")
    assert manifest["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", (
        "the head runs the sweep driver; stages belong on the GPU workers")


def test_kuberay_start_params_are_strings_and_replicas_in_range():
    for name, group in kuberay_groups():
        for key, value in group["rayStartParams"].items():
            assert isinstance(value, str), f"{name}: rayStartParams.{key} must be a string (CRD)"
        if name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


def test_every_kuberay_container_has_shm_and_the_shared_volume():
    for name, group in kuberay_groups():
        pod = group["template"]["spec"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            for path, volume in mounts.items():
                assert volume in volumes, f"{name}: {path} mounts {volume}, which the pod lacks"
            assert "/dev/shm" in mounts, f"{name}: no /dev/shm (a container's own is 64 MiB)"
            assert volumes[mounts["/dev/shm"]].get("emptyDir", {}).get("medium") == "Memory"
            assert SHARED in mounts, f"{name}: nothing mounted at {SHARED}"
            assert "persistentVolumeClaim" in volumes[mounts[SHARED]]


def test_kuberay_workers_ask_for_gpus():
    for name, group in kuberay_groups()[1:]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, name


# --- SLURM ------------------------------------------------------------------------

def sbatch_directives() -> dict[str, str]:
    """The #SBATCH options as sbatch reads them: only before the first command."""
    options = {}
    for line in SLURM.read_text().splitlines()[1:]:
        if line.startswith("#SBATCH"):
            key, _, value = line.split(None, 1)[1].partition("=")
            options[key] = value
        elif line.strip() and not line.startswith("#"):
            break
    return options


def test_slurm_script_parses():
    result = subprocess.run(["bash", "-n", str(SLURM)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_slurm_header_asks_for_memory_and_gpus():
    options = sbatch_directives()
    assert "--mem" in options, "no --mem: SLURM gives the job its default share of memory"
    assert "--gpus-per-node" in options
    lines = SLURM.read_text().splitlines()
    assert sum(line.startswith("#SBATCH") for line in lines) == len(options), (
        "an #SBATCH line after the first command is ignored by sbatch")


STUBS = {
    # srun [options] command...: run the command here, noting the node it was meant for.
    "srun": """
        node=?
        while [ $# -gt 0 ]; do
            case "$1" in
                -w) node="$2"; shift 2 ;;
                --*|-*) shift ;;
                *) break ;;
            esac
        done
        echo "srun $node: $*" >> "$STUB_LOG"
        SLURMD_NODENAME="$node" exec "$@"
    """,
    "scontrol": """
        [ "$1 $2" = "show hostnames" ] || exit 1
        printf '%s\\n' $FAKE_NODES
    """,
    "hostname": """
        case "$1" in
            -I) echo "$FAKE_HEAD_ADDRESSES" ;;
            --ip-address|-i) echo 127.0.1.1 ;;
            *) echo "$SLURMD_NODENAME" ;;
        esac
    """,
}

VENV_STUBS = {
    # ray start --block stays up like a Ray node until killed, unless FAKE_DEAD_NODE
    # names its node; ray status lists the nodes started so far (after one miss,
    # as while the head comes up).
    "ray": """
        echo "ray $*" >> "$STUB_LOG"
        case "$1" in
            start)
                if [ "$SLURMD_NODENAME" = "${FAKE_DEAD_NODE:-}" ]; then exit 1; fi
                echo started >> "$STUB_STATE/nodes"
                exec sleep 60 ;;
            status)
                if [ ! -f "$STUB_STATE/polled" ]; then touch "$STUB_STATE/polled"; exit 1; fi
                echo "======== Autoscaler status ========"
                echo "Node status"
                echo "Active:"
                while read -r _; do echo " 1 node_$RANDOM"; done < "$STUB_STATE/nodes"
                echo "Pending:"
                echo " (no pending nodes)" ;;
        esac
    """,
    "python": """
        echo "python RAY_ADDRESS=$RAY_ADDRESS $*" >> "$STUB_LOG"
    """,
}


def write_stub(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + textwrap.dedent(body))
    path.chmod(0o755)


def run_slurm(tmp_path, *, gpus="a100:8", nodes="gpu-a gpu-b gpu-c",
              head_addresses="10.1.2.3 172.17.0.1 fd00::5", dead_node="", extra_env=None):
    """Run cluster/slurm.sbatch as the batch step of a fake allocation; returns
    (completed process, log lines of what it ran)."""
    project, bin_dir, state = tmp_path / "project", tmp_path / "bin", tmp_path / "state"
    for folder in (project / ".venv" / "bin", project / "experiments" / "gpu", bin_dir, state):
        folder.mkdir(parents=True)
    (project / "experiments" / "gpu" / "x.yaml").write_text("experiment: {name: x}\n")
    (state / "nodes").touch()
    for name, body in STUBS.items():
        write_stub(bin_dir / name, body)
    for name, body in VENV_STUBS.items():
        write_stub(project / ".venv" / "bin" / name, body)
    log = tmp_path / "log"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path),
        "SLURM_SUBMIT_DIR": str(project), "SLURM_JOB_NODELIST": "gpu-[a-c]",
        "SLURM_CPUS_PER_TASK": "32", "SLURM_GPUS_PER_NODE": gpus,
        "FAKE_NODES": nodes, "FAKE_HEAD_ADDRESSES": head_addresses, "FAKE_DEAD_NODE": dead_node,
        "STUB_LOG": str(log), "STUB_STATE": str(state), "RAY_POLL_S": "0.05", "RAY_WAIT_S": "20",
        **(extra_env or {}),
    }
    result = subprocess.run(["bash", str(SLURM), "experiments/gpu/x.yaml", "grid.seeds=[0]"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    lines = log.read_text().splitlines() if log.exists() else []
    return result, lines


@pytest.mark.parametrize("gpus, count", [("8", 8), ("a100:8", 8), ("gpu:a100:8", 8),
                                         ("a100:4,v100:2", 6)])
def test_slurm_starts_every_node_from_the_venv_then_the_sweep(tmp_path, gpus, count):
    result, lines = run_slurm(tmp_path, gpus=gpus)
    assert result.returncode == 0, result.stderr
    starts = [line for line in lines if line.startswith("ray start")]
    head_start = next(line for line in starts if "--head" in line)
    assert "--node-ip-address=10.1.2.3" in head_start, "the head must advertise a routable IP"
    assert all(f"--num-gpus={count} " in line + " " for line in starts), starts
    assert all("--num-cpus=32" in line for line in starts)
    workers = [line for line in lines if line.startswith("srun gpu-b") or line.startswith("srun gpu-c")]
    assert len(workers) == 2 and all("--address=10.1.2.3:6379" in line for line in workers)
    sweep = lines[-1]
    assert sweep == ("python RAY_ADDRESS=10.1.2.3:6379 -m orchestrator sweep "
                     "experiments/gpu/x.yaml grid.seeds=[0]")
    # Polled, not slept: the workers start after the head answered `ray status`,
    # the sweep after all three nodes did.
    first_worker = lines.index(workers[0])
    assert any(line.startswith("ray status") for line in lines[:first_worker])
    assert "3 Ray node(s) active" in result.stdout


def test_slurm_never_hands_out_a_loopback_head_address(tmp_path):
    result, lines = run_slurm(tmp_path, head_addresses="127.0.0.1 ::1")
    assert result.returncode != 0
    assert "no IPv4 address outside 127.0.0.0/8" in result.stderr
    assert not any(line.startswith("ray start") for line in lines)


def test_slurm_fails_fast_when_a_node_does_not_start(tmp_path):
    result, _ = run_slurm(tmp_path, dead_node="gpu-c", extra_env={"RAY_WAIT_S": "600"})
    assert result.returncode == 1
    assert "ray start on gpu-c exited" in result.stderr


def test_slurm_rejects_an_unreadable_gpu_count(tmp_path):
    result, lines = run_slurm(tmp_path, gpus="a100:eight")
    assert result.returncode == 2
    assert "cannot read a GPU count from --gpus-per-node=a100:eight" in result.stderr
