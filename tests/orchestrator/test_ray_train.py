"""Data-parallel training of one model on Ray Train (issue 13): `train.num_workers` > 1
runs SFT/DPO under a real TorchTrainer (gloo on CPU workers, a real local Ray), and
its loss curve matches an in-process run with the same global batch."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.config import (
    Config,
    ConfigError,
    DataParallel,
    ModelLoading,
    SFTSettings,
    TrainMethod,
    load_config,
)
from orchestrator.contract import Files
from orchestrator.planning import expand_grid
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model
from orchestrator.training import TrainRun, sft_train

from ..conftest import ROOT, run_command

SMOKE = ROOT / "experiments" / "smoke.yaml"
PROMPTS = [f"Question: {a} plus {b}?\nAnswer:\n" for a in range(1, 9) for b in range(1, 9)]
ROWS = [{"prompt": p, "completion": f"#### {a + b}"}
        for p, (a, b) in zip(PROMPTS, [(a, b) for a in range(1, 9) for b in range(1, 9)],
                             strict=True)]                                      # 64 rows
# Measured on 2 CPU cores (2026-11-26): the 2-worker curve equals the 1-worker one to
# 1.9e-6 (the float32 all-reduce's order), the saved weights to 8e-6; with FSDP too, the
# curve to 1.9e-6 (71 s on a busy machine, against 3 s for one worker in process).
LOSS_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-4


def keys(*overrides: str) -> dict[str, str]:
    plan = expand_grid(load_config(SMOKE, ["grid.sizes=[100]", *overrides]))
    return {spec.id: spec.key for spec in plan.specs}


def test_one_worker_keeps_every_key_and_more_workers_move_only_training():
    """num_workers is key-neutral at 1 (artifacts made before the knob stay cached); 2
    workers are other numerics, so SFT, DPO and what depends on them get new keys."""
    one, two = keys(), keys("train.num_workers=2")
    assert keys("train.num_workers=1") == one
    moved = {i for i in one if one[i] != two[i]}
    assert {i.split("[")[0] for i in moved} >= {"sft", "dpo", "evaluate"}
    assert one["base_model[tiny]"] == two["base_model[tiny]"]
    assert all(not i.startswith(("teacher_generate", "base_model")) for i in moved)


@pytest.mark.parametrize("override", ["train.use_gpu=true", "train.strategy=fsdp"])
def test_worker_settings_without_workers_are_refused(override):
    with pytest.raises(ConfigError, match="train.num_workers > 1"):
        load_config(SMOKE, [override])


def test_fsdp_with_lora_is_refused():
    with pytest.raises(ConfigError, match="train.strategy"):
        load_config(SMOKE, ["train.num_workers=2", "train.strategy=fsdp",
                            "train.lora.enabled=true"])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_tiny_model([r["prompt"] + r["completion"] for r in ROWS] * 5,
                    TinyLlamaSpec(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                    seed=0, out_dir=folder)
    return str(folder)


@pytest.fixture
def local_ray():
    from orchestrator import runner

    runner.start_ray(Config())
    try:
        yield
    finally:
        runner.stop_ray()


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / Files.MODEL / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_workers_match_one_worker_with_the_same_global_batch(base, tmp_path, local_ray,
                                                                       strategy):
    """DDP, and FSDP (weights, gradients and optimizer state sharded over the two CPU
    workers, gathered on rank 0 to save), train the same model as one worker."""
    settings = SFTSettings(epochs=6, batch_size=8, learning_rate=1e-2)      # 48 steps, 4 logged
    one = sft_train(TrainRun(base, ModelLoading(), settings, seed=0), ROWS, tmp_path / "one")
    method = TrainMethod(parallel=DataParallel(num_workers=2, strategy=strategy))
    two = sft_train(TrainRun(base, ModelLoading(), replace(settings, batch_size=4), 0, "auto",
                             method), ROWS, tmp_path / "two")

    assert two.steps == one.steps == 48 and two.examples == one.examples == 64
    assert [s for s, _ in two.loss_curve] == [s for s, _ in one.loss_curve] == [10, 20, 30, 40]
    assert max(abs(a - b) for (_, a), (_, b) in zip(one.loss_curve, two.loss_curve,
                                                     strict=True)) < LOSS_TOLERANCE
    assert one.loss_curve[-1][1] < one.loss_curve[0][1] / 2         # it did learn
    assert two.train_tokens == one.train_tokens and two.device == "cpu"
    assert two.trainable_parameters == one.trainable_parameters
    # Saved once, by rank 0, where the stage expects it; Ray Train's files are gone.
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [Files.MODEL]
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < WEIGHT_TOLERANCE


@pytest.mark.slow
def test_a_two_worker_sweep_cell_publishes_once_evaluates_and_is_cached(tmp_path):
    out = tmp_path / "run"
    ray_results_before = (Path.home() / "ray_results").exists()
    command = [sys.executable, "-m", "orchestrator", "sweep", str(SMOKE),
               f"experiment.output_dir={out}", "experiment.name=dp", "grid.data_types=[sft_teacher]",
               "grid.sizes=[100]", "task.n_test=20", "model.pretrain_docs=500",
               "train.num_workers=2"]
    first = run_command(command, 400, cwd=ROOT)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "4/4 stages" in first.stdout and "(4 run, 0 cached)" in first.stdout

    [folder] = (out / "artifacts" / "sft").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["DONE", "manifest.json", Files.MODEL,
                                                        "result.json", "spec.json"]
    result = json.loads((folder / "result.json").read_text())
    assert result["steps"] == 3 * 7            # 3 epochs of ceil(100 / (8 per worker x 2))
    assert result["loss_curve"] and result["examples"] == 100
    [evaluation] = (out / "artifacts" / "evaluate").iterdir()
    assert (evaluation / "DONE").exists()
    assert not list(tmp_path.rglob("_ray_train"))
    assert (Path.home() / "ray_results").exists() == ray_results_before

    again = run_command(command, 400, cwd=ROOT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(0 run, 4 cached)" in again.stdout


def test_a_data_parallel_stage_waits_reserving_nothing_its_workers_hold_its_resources():
    """The stage's task only waits for the TorchTrainer: its custom resource and memory go
    to each worker, so Ray places workers only on nodes that offer them."""
    from orchestrator.runner import task_options, worker_resources

    overrides = ["cluster.resources.sft.custom_resource=trainer",
                 "cluster.resources.sft.custom_amount=0.5", "cluster.resources.sft.memory_gb=1"]
    for workers, waits in ((1, False), (2, True)):
        config = load_config(SMOKE, ["grid.sizes=[100]", f"train.num_workers={workers}",
                                     *overrides])
        sft = next(s for s in expand_grid(config).specs if s.stage == "sft")
        options = task_options(sft, config)
        if waits:
            assert options["num_cpus"] == 0 and "resources" not in options
            assert "memory" not in options
        else:
            assert options["resources"] == {"trainer": 0.5} and options["memory"] == 2**30
        assert worker_resources(sft.resources) == {"trainer": 0.5, "memory": float(2**30)}


@pytest.mark.slow
def test_ray_train_workers_reserve_the_stages_custom_resource(base, tmp_path, monkeypatch):
    """On a Ray offering 2 `trainer`, a 2-worker training whose stage asks 1 `trainer`
    holds both while it trains (watched from the driver)."""
    import threading

    import ray

    from orchestrator.runner import STAGE_RESOURCES_ENV

    monkeypatch.setenv(STAGE_RESOURCES_ENV, '{"trainer": 1.0}')
    ray.init(num_cpus=2, resources={"trainer": 2.0}, include_dashboard=False,
             log_to_driver=False)
    seen, stop = [], threading.Event()

    def watch():
        while not stop.wait(0.2):
            seen.append(ray.available_resources().get("trainer", 0.0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        method = TrainMethod(parallel=DataParallel(num_workers=2))
        sft_train(TrainRun(base, ModelLoading(), SFTSettings(epochs=1, batch_size=4), 0, "auto",
                           method), ROWS, tmp_path / "two")
    finally:
        stop.set()
        watcher.join()
        ray.shutdown()
    assert seen and min(seen) == 0.0 and max(seen) == 2.0, sorted(set(seen))
