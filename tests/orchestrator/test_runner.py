"""The Ray runner on a real local Ray: a DAG whose stages are quick (a pointer base model,
the oracle pool, a stage that fails), so failure, skipping and resume are seen directly."""

from __future__ import annotations

import dataclasses

import pytest

from orchestrator.config import config_from_dict
from orchestrator.contract import GridPoint, In
from orchestrator.planning import Plan, make_spec
from orchestrator.runner import Events, ray_session, run_plan, unplaceable
from orchestrator.stages import base_model, human_data, sft, teacher


class Recorder(Events):
    def __init__(self):
        self.finished_stages: list[tuple[str, bool]] = []
        self.submitted_ids: list[str] = []

    def submitted(self, spec):
        self.submitted_ids.append(spec.id)

    def finished(self, spec, outcome):
        self.finished_stages.append((spec.id, outcome.cached))


def small_plan(config, missing_folder) -> tuple[Plan, dict[str, str]]:
    """pool (ok), hub base model (ok), human data from a missing folder (fails), and an SFT
    on that data (must be skipped, never run)."""
    plan = Plan()
    keys = {"pool": plan.add(make_spec(config, "teacher_generate", "pool",
                                       teacher.from_config(config))),
            "base": plan.add(make_spec(config, "base_model", "hub",
                                       base_model.HubModelParams("org/model")))}
    gsm8k_nowhere = dataclasses.replace(config.task.source, name="gsm8k", path=str(missing_folder))
    broken = human_data.HumanDataParams(gsm8k_nowhere, 10)
    keys["human"] = plan.add(make_spec(config, "human_data", "broken", broken))
    keys["sft"] = plan.add(make_spec(config, "sft", "on-broken",
                                     sft.SFTParams.from_config(config, GridPoint(10, 0)),
                                     {In.BASE: keys["base"], In.DATA: keys["human"]}))
    return plan, keys


@pytest.mark.slow
def test_failures_skip_dependents_and_a_rerun_does_only_what_is_missing(tmp_path):
    config = config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100},
                               "cluster": {"artifacts": str(tmp_path / "store"), "num_cpus": 2,
                                           "max_retries": 0}})
    plan, keys = small_plan(config, tmp_path / "no-such-folder")
    with ray_session(config) as where:
        assert where == "local"
        first = Recorder()
        report = run_plan(plan, config, first)
        again = Recorder()
        rerun = run_plan(plan, config, again)
    assert set(report.outcomes) == {keys["pool"], keys["base"]}
    assert list(report.failed) == [keys["human"]]
    assert "no-such-folder" in report.failed[keys["human"]] and "\n" not in report.failed[keys["human"]]
    assert report.skipped == {keys["sft"]: keys["human"]}
    assert report.outcomes[keys["pool"]].result.pool_size == 10
    # the re-run loads the finished stages from the store and submits only the rest
    assert sorted(again.finished_stages) == [("base_model[hub]", True),
                                             ("teacher_generate[pool]", True)]
    assert again.submitted_ids == ["human_data[broken]", "sft[on-broken]"]
    assert list(rerun.failed) == [keys["human"]]


def test_ray_session_stops_the_local_ray_it_started_even_on_error(tmp_path):
    import ray

    config = config_from_dict({"cluster": {"num_cpus": 1}, "task": {"n_train": 100},
                               "grid": {"sizes": [10]}})
    with pytest.raises(RuntimeError, match="inside"), ray_session(config):
        assert ray.is_initialized()
        raise RuntimeError("inside")
    assert not ray.is_initialized()


def test_a_custom_resource_no_node_offers_is_named_before_anything_runs(tmp_path):
    """cluster.resources.<group>.custom_resource: Ray would keep such a stage pending
    forever on a cluster without that resource (tests/cluster/test_multinode.py runs
    stages that ask for one on the nodes that have it)."""
    config = config_from_dict({
        "task": {"n_train": 100}, "grid": {"sizes": [10]},
        "cluster": {"num_cpus": 1, "artifacts": str(tmp_path / "store"), "resources": {
            "teacher_generate": {"custom_resource": "generator", "custom_amount": 0.5}}}})
    plan = Plan()
    plan.add(make_spec(config, "teacher_generate", "pool", teacher.from_config(config)))
    plan.add(make_spec(config, "base_model", "hub", base_model.HubModelParams("org/model")))
    with ray_session(config):
        problems = unplaceable(plan)
    assert problems == ["cluster.resources.teacher_generate: teacher_generate[pool] asks for "
                        "1 CPUs, 0 GPUs, 0.5 'generator', which no node has "
                        "(largest node: 1 CPUs, 0 GPUs)"]


@pytest.mark.slow
def test_each_gpu_stage_runs_in_a_process_of_its_own_with_the_gpu_ray_gave_it(tmp_path):
    """Fake GPUs on a real local Ray: four GPU-requesting stages (oracle pools of distinct
    sizes) each ran in a fresh worker that saw the CUDA_VISIBLE_DEVICES Ray assigned, and
    that worker has exited; CPU stages may share workers."""
    import time

    import psutil
    import ray

    config = config_from_dict({
        "task": {"n_train": 100}, "grid": {"sizes": [10]},
        "cluster": {"artifacts": str(tmp_path / "store"),
                    "resources": {"teacher_generate": {"num_cpus": 0.5, "num_gpus": 1}}}})
    plan = Plan()
    for pool in (10, 11, 12, 13):
        params = dataclasses.replace(teacher.from_config(config), n_max=pool)
        plan.add(make_spec(config, "teacher_generate", f"pool={pool}", params))
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_plan(plan, config, Recorder())
    finally:
        ray.shutdown()
    outcomes = list(report.outcomes.values())
    assert len(outcomes) == 4 and not report.failed
    assert len({o.pid for o in outcomes}) == 4                 # a fresh process per GPU stage
    assert {o.devices for o in outcomes} <= {"0", "1"}         # one of the two fake GPUs each
    deadline = time.monotonic() + 10
    while any(psutil.pid_exists(o.pid) for o in outcomes) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(psutil.pid_exists(o.pid) for o in outcomes)  # and it exited afterwards
