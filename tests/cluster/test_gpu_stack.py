"""The [gpu] extra is one pinned stack that installs without moving torch or
transformers, and the Makefile never reinstalls torch under vLLM.

The Makefile tests run `make` with a stand-in interpreter that records every pip
call; the slow test asks the package index what `pip install .[gpu]` would do
to the environment the suite runs in (built by `make install`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def requirement_names(requirements: list[str]) -> set[str]:
    return {Requirement(text).name.lower() for text in requirements}


def test_gpu_extra_pins_vllm_to_the_makefiles_torch(gpu_pins, makefile_torch_version):
    assert {"vllm", "torch", "ray"} <= set(gpu_pins), f"the [gpu] extra pins only {gpu_pins}"
    assert gpu_pins["torch"] == makefile_torch_version, (
        "the [gpu] extra's torch and the Makefile's TORCH_VERSION must be one version")


def test_cpu_install_never_pulls_vllm_and_caps_transformers(pyproject):
    project = pyproject["project"]
    for group, requirements in [("dependencies", project["dependencies"]),
                                ("dev", project["optional-dependencies"]["dev"])]:
        assert "vllm" not in requirement_names(requirements), f"{group} pulls vLLM"
    transformers = next(Requirement(text) for text in project["dependencies"]
                        if Requirement(text).name == "transformers")
    assert any(s.operator == "<" for s in transformers.specifier), (
        "transformers needs the GPU stack's cap in the core dependencies, so the CPU "
        "suite runs on the version the GPU stack resolves to")


# --- the Makefile, with a stand-in interpreter ------------------------------------

FAKE_PYTHON = """\
#!/usr/bin/env bash
# Records its arguments; answers the two questions install-gpu asks torch.
echo "$*" >> "$PIP_LOG"
case "$*" in
    *"-m venv "*) mkdir -p "${@: -1}/bin" && cp "$0" "${@: -1}/bin/python" ;;
    *importlib.metadata*) echo "torch==2.13.0+cu130" ;;
    *torch.version.cuda*) exit "${FAKE_CPU_TORCH:-0}" ;;
esac
"""


def run_make(tmp_path: Path, target: str, *, gpu_venv: bool = False, cpu_torch: bool = False):
    """`make TARGET` with VENV in tmp_path; returns the interpreter calls in order."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    python, venv, log = tmp_path / "python3", tmp_path / "venv", tmp_path / "calls"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if gpu_venv:
        (venv / "bin").mkdir(parents=True)
        shutil.copy(python, venv / "bin" / "python")
        (venv / "torch-pin.txt").write_text("torch==2.13.0+cu130\n")
    env = {**os.environ, "PIP_LOG": str(log), "FAKE_CPU_TORCH": "1" if cpu_torch else "0"}
    env.pop("MAKEFLAGS", None)
    result = subprocess.run(["make", "--no-print-directory", target, f"VENV={venv}",
                             f"PYTHON={python}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def pip_installs(calls: list[str]) -> list[str]:
    return [call.split("pip install -q ", 1)[1] for call in calls
            if "pip install -q " in call and "--upgrade pip" not in call]


def test_make_install_on_a_fresh_venv_installs_torch_first(tmp_path, makefile_torch_version):
    result, calls = run_make(tmp_path, "install")
    assert result.returncode == 0, result.stderr
    assert pip_installs(calls) == [f"torch=={makefile_torch_version}", '-e .[dev]']


def test_make_install_on_a_gpu_venv_keeps_its_torch(tmp_path):
    """The bug this guards: `make install` after install-gpu put TORCH_SPEC's
    torch back under vLLM's compiled ops."""
    result, calls = run_make(tmp_path, "install", gpu_venv=True)
    assert result.returncode == 0, result.stderr
    installs = pip_installs(calls)
    assert not any(call.startswith("torch") for call in installs), installs
    assert installs == [f"-c {tmp_path}/venv/torch-pin.txt -e .[dev,gpu]"]


def test_make_install_gpu_installs_torch_before_vllm_and_pins_it(tmp_path, makefile_torch_version):
    result, calls = run_make(tmp_path, "install-gpu")
    assert result.returncode == 0, result.stderr
    pin = tmp_path / "venv" / "torch-pin.txt"
    assert pip_installs(calls) == [f"torch=={makefile_torch_version}", f"-c {pin} -e .[dev,gpu]"]
    assert pin.read_text().strip() == "torch==2.13.0+cu130"
    assert (tmp_path / "venv" / ".installed").exists(), (
        "without .installed, the next `make sweep` would run the CPU install")


def test_make_install_gpu_refuses_a_cpu_torch(tmp_path):
    result, calls = run_make(tmp_path, "install-gpu", cpu_torch=True)
    assert result.returncode != 0
    assert not any("[dev,gpu]" in call for call in pip_installs(calls))


def test_make_help_lists_install_gpu():
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert re.search(r"^\s+make install-gpu\s+\S", result.stdout, re.M), result.stdout


# --- what the package index resolves ----------------------------------------------

# Signs that pip could not reach its index (as opposed to finding a conflict).
UNREACHABLE = re.compile(r"NewConnectionError|Max retries exceeded|Temporary failure in name "
                         r"resolution|Network is unreachable|ConnectTimeout|ReadTimeout|"
                         r"ProxyError|Could not fetch URL|from versions: none")


def pip_dry_run(tmp_path: Path, *args: str) -> dict:
    """`pip install --dry-run --report` into the running interpreter's environment."""
    report = tmp_path / f"report-{len(list(tmp_path.iterdir()))}.json"
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report",
               str(report), "--retries", "1", "--timeout", "30", "--no-input", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if result.returncode != 0 and UNREACHABLE.search(result.stderr):
        why = next(line for line in result.stderr.splitlines() if UNREACHABLE.search(line))
        pytest.skip(f"package index unreachable: {why.strip()[:300]}")
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stderr[-3000:]}"
    return json.loads(report.read_text())


def metadata_requirement(report: dict, package: str, dependency: str) -> Requirement:
    item = next(i for i in report["install"] if i["metadata"]["name"].lower() == package)
    for text in item["metadata"].get("requires_dist", []):
        requirement = Requirement(text)
        if requirement.name.lower() == dependency and requirement.marker is None:
            return requirement
    raise AssertionError(f"{package}'s metadata does not require {dependency}")


@pytest.mark.slow
def test_gpu_extra_resolves_without_moving_torch_or_transformers(tmp_path, gpu_pins):
    """What `pip install .[gpu]` would do on top of `make install`: add vLLM and
    its own dependencies, keep the installed torch and transformers."""
    from importlib.metadata import version

    assert "vllm" in gpu_pins, "the [gpu] extra does not pin vLLM"
    started = time.monotonic()
    probe = pip_dry_run(tmp_path, "--no-deps", "--ignore-installed", f"vllm=={gpu_pins['vllm']}")
    torch_pin = metadata_requirement(probe, "vllm", "torch")
    assert torch_pin.specifier.contains(gpu_pins["torch"]), (
        f"vLLM {gpu_pins['vllm']} wants {torch_pin}, the project pins torch {gpu_pins['torch']}")
    transformers_cap = metadata_requirement(probe, "vllm", "transformers")
    assert transformers_cap.specifier.contains(version("transformers")), (
        f"vLLM {gpu_pins['vllm']} wants {transformers_cap}; this environment has "
        f"transformers {version('transformers')} (run `make install` after changing the cap)")

    report = pip_dry_run(tmp_path, f"{ROOT}[gpu]")
    planned = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
    assert planned.get("vllm") == gpu_pins["vllm"], planned.get("vllm")
    moved = {name: planned[name] for name in ("torch", "transformers") if name in planned}
    assert not moved, (
        f"the [gpu] extra would replace {moved} (installed: torch {version('torch')}, "
        f"transformers {version('transformers')})")
    print(f"dry-run resolve of [gpu]: {len(planned)} packages in {time.monotonic() - started:.0f} s")
