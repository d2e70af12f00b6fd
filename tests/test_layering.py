"""The layering the code relies on (README "Architecture"), checked on every import
statement of the packages, including imports inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, module: str) -> set[str]:
    """Every module that `path` (module `module`) imports (relative imports resolved)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def modules(package: str) -> dict[str, set[str]]:
    return {module_name(p): imported(p, module_name(p)) for p in sorted((ROOT / package).rglob("*.py"))}


def violations(importers: dict[str, set[str]], who, forbidden: tuple[str, ...]) -> list[str]:
    """`module imports name` for every importer matching `who` that imports a forbidden
    module (or a submodule of one)."""
    found = []
    for module, names in importers.items():
        if not who(module):
            continue
        for name in sorted(names):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{module} imports {name}")
    return found


ORCHESTRATOR = modules("orchestrator")
ANALYSIS = modules("analysis")

RULES = [
    # ray_train launches Ray Train's TorchTrainer for data-parallel training (issue 13);
    # Ray's task API stays in the runner (test_ray_train_uses_only_ray_train).
    ("only the runner and ray_train import ray", ORCHESTRATOR,
     lambda m: m not in ("orchestrator.runner", "orchestrator.ray_train"), ("ray",)),
    ("only tracking imports mlflow", ORCHESTRATOR,
     lambda m: m != "orchestrator.tracking", ("mlflow",)),
    ("stages import no executor, tracker or planner", ORCHESTRATOR,
     lambda m: m.startswith("orchestrator.stages"),
     ("ray", "mlflow", "orchestrator.runner", "orchestrator.tracking", "orchestrator.planning",
      "orchestrator.sweep")),
    ("planning is pure", ORCHESTRATOR,
     lambda m: m.startswith("orchestrator.planning"), ("ray", "mlflow", "torch")),
    ("tasks and backends import no stages", ORCHESTRATOR,
     lambda m: m.startswith(("orchestrator.tasks", "orchestrator.backends")),
     ("orchestrator.stages", "orchestrator.planning", "ray", "mlflow")),
    ("analysis imports nothing from the orchestrator", ANALYSIS,
     lambda m: True, ("orchestrator", "ray", "mlflow", "torch")),
]


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_layering(rule):
    _, importers, who, forbidden = rule
    assert violations(importers, who, forbidden) == []


def test_ray_train_uses_only_ray_train():
    """Data-parallel training may use Ray Train, nothing else of Ray (tasks, actors, init)."""
    ray_imports = {n for n in ORCHESTRATOR["orchestrator.ray_train"]
                   if n == "ray" or n.startswith("ray.")}
    assert ray_imports and all(n.startswith("ray.train") for n in ray_imports), ray_imports


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The scan itself: a stage importing ray, even inside a function, is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def run():\n    import ray.util\n    from ..runner import x\n")
    found = violations({"orchestrator.stages.bad": imported(bad, "orchestrator.stages.bad")},
                       lambda m: m.startswith("orchestrator.stages"), RULES[2][3])
    assert found == ["orchestrator.stages.bad imports orchestrator.runner",
                     "orchestrator.stages.bad imports orchestrator.runner.x",
                     "orchestrator.stages.bad imports ray.util"]


def test_planning_loads_without_heavy_libraries():
    """Transitively too: planning a grid must not load torch, Ray or MLflow."""
    code = ("import sys; import orchestrator.planning, orchestrator.config; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers', 'trl') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_on_its_own():
    """No import cycle hides behind import order: each module loads in a fresh interpreter."""
    names = [m for m in {**ORCHESTRATOR, **ANALYSIS} if not m.endswith("__main__")]
    procs = {name: subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=ROOT,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name in names}
    failed = {name: proc.communicate(timeout=300)[1].strip().splitlines()[-1:]
              for name, proc in procs.items() if proc.wait(timeout=300) != 0}
    assert failed == {}
