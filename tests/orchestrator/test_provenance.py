"""Cache provenance on a real artifact store: spec.json records what produced an
artifact; one made with other library versions is reused with one warning per stage
kind, and recomputed with cluster.strict_cache."""

from __future__ import annotations

import io
import json
import subprocess

from orchestrator.config import config_from_dict
from orchestrator.planning import Plan, expand_grid
from orchestrator.provenance import PROJECT, library_differences, library_versions
from orchestrator.store import SPEC, ArtifactStore, run_cached
from orchestrator.sweep import check_cache_provenance


def teacher_stages(tmp_path, strict: bool = False):
    """Two teacher_generate stages (pools of 10 and 20) of one config, and that config."""
    def config(size):
        return config_from_dict({"grid": {"sizes": [size]}, "task": {"n_train": 100},
                                 "cluster": {"artifacts": str(tmp_path / "store"),
                                             "strict_cache": strict}})
    specs = [next(s for s in expand_grid(config(size)).specs if s.stage == "teacher_generate")
             for size in (10, 20)]
    return config(10), Plan(specs=specs)


def made_with_older_torch(store: ArtifactStore, spec) -> None:
    path = store.path(spec.stage, spec.key) / SPEC
    written = json.loads(path.read_text())
    written["provenance"]["libraries"]["torch"] = "1.13.1"
    path.write_text(json.dumps(written))


def test_spec_json_records_code_commit_and_libraries(tmp_path):
    config, plan = teacher_stages(tmp_path)
    store = ArtifactStore(config.artifacts_dir)
    outcome = run_cached(store, plan.specs[0], {})
    recorded = json.loads((store.path("teacher_generate", outcome.key) / SPEC).read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True,
                          text=True).stdout.strip()
    assert recorded["provenance"] == {"synthscale": "0.1.0", "git_commit": head,
                                      "libraries": library_versions()}
    assert "vllm" not in recorded["provenance"]["libraries"]     # not installed here


def test_an_artifact_from_other_libraries_is_reused_with_one_warning_per_stage_kind(tmp_path):
    config, plan = teacher_stages(tmp_path)
    store = ArtifactStore(config.artifacts_dir)
    for spec in plan.specs:
        run_cached(store, spec, {})
        made_with_older_torch(store, spec)
    stream = io.StringIO()
    check_cache_provenance(config, plan, stream)
    here = library_versions()["torch"]
    assert stream.getvalue() == (f"warning: reusing 2 cached teacher_generate stage(s) made with "
                                 f"torch 1.13.1 (here {here}); cluster.strict_cache=true "
                                 "recomputes them\n")
    assert all(run_cached(store, spec, {}).cached for spec in plan.specs)


def test_strict_cache_recomputes_it_with_this_sweeps_libraries(tmp_path):
    config, plan = teacher_stages(tmp_path, strict=True)
    store = ArtifactStore(config.artifacts_dir)
    first, second = plan.specs
    run_cached(store, first, {})
    run_cached(store, second, {})
    made_with_older_torch(store, first)
    stream = io.StringIO()
    check_cache_provenance(config, plan, stream)
    assert stream.getvalue().startswith("cluster.strict_cache: recomputing 1 cached "
                                        "teacher_generate stage(s) made with torch 1.13.1")
    assert not store.is_done(first.stage, first.key) and store.is_done(second.stage, second.key)
    again = run_cached(store, first, {})
    assert not again.cached
    assert library_differences(store.spec(first.stage, first.key)["provenance"],
                               library_versions()) == []
    left = sorted(p.name for p in (tmp_path / "store" / "teacher_generate").iterdir())
    assert left == sorted([first.key[:16], second.key[:16]])   # nothing of the discarded one


def test_only_libraries_installed_on_both_sides_are_compared():
    recorded = {"libraries": {"torch": "2.13.0", "vllm": "0.29.0"}}
    assert library_differences(recorded, {"torch": "2.13.0"}) == []        # a CPU-only driver
    assert library_differences(recorded, {"torch": "2.14.0"}) == ["torch 2.13.0 (here 2.14.0)"]
    assert library_differences({}, {"torch": "2.14.0"}) == []              # made before records
