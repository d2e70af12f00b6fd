"""Data-parallel training of one model on Ray Train (`train.num_workers` > 1).

`train_data_parallel` runs a `TorchTrainer` whose workers each run
`training.train_replica` on the same records: transformers' Trainer sees the process
group Ray Train set up (gloo on CPU workers, NCCL on GPU ones), shards the data with
its distributed sampler and wraps the model in DDP, or FSDP with `train.strategy: fsdp`.
Ray places the workers: each reserves what `cluster.resources.<sft|dpo>` asks of a stage,
its custom resource and memory included (`ScalingConfig.resources_per_worker`), while the
stage's own task, which only waits here, reserves nothing (runner.py). Rank 0 alone writes the model into the stage's
folder (on the artifact store every node mounts) and hands the `TrainResult` back as a
Ray Train checkpoint holding `result.json`: Ray Train 2.60 (v2) keeps a report's
metrics only with a checkpoint. Ray Train's own files go to `<out>/_ray_train`,
removed when training ends, never to ~/ray_results.

`RayTrainReportCallback` is not used: it reports on the Trainer's checkpoint saves, and
a stage saves none (a stage is the unit of resume, training.py).

The one module besides the runner that imports ray, and only `ray.train`: Ray's task API
stays in runner.py. Stages reach this module through `training.sft_train`/`dpo_train`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from orchestrator.training import TrainResult, TrainRun, train_replica

RESULT = "result.json"
STORAGE = "_ray_train"


def train_data_parallel(kind: str, run: TrainRun, rows: list[dict], out: Path) -> TrainResult:
    """`kind` ("sft" or "dpo") on `run.method.parallel.num_workers` Ray Train workers;
    saves to `out/model` like the in-process run."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    parallel = run.method.parallel
    threads = max(1, int(float(os.environ.get("SYNTHSCALE_TORCH_THREADS", "1"))))
    # The stage's custom resource and memory as well (runner.worker_resources), so Ray
    # places the workers only where the stage could run.
    extra = json.loads(os.environ.get("SYNTHSCALE_STAGE_RESOURCES", "{}"))
    resources = {"CPU": threads, **({"GPU": 1} if parallel.use_gpu else {}), **extra}
    device = "cuda" if parallel.use_gpu else "cpu"
    storage = Path(out).resolve() / STORAGE
    trainer = TorchTrainer(
        _worker,
        train_loop_config={"kind": kind, "run": dataclasses.replace(run, device=device),
                           "rows": rows, "out": str(out), "threads": threads},
        torch_config=TorchConfig(backend="nccl" if parallel.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=parallel.num_workers, use_gpu=parallel.use_gpu,
                                     resources_per_worker=resources),
        # A failed worker fails the stage; the runner's retries (cluster.max_retries) redo it.
        run_config=RunConfig(name=kind, storage_path=str(storage),
                             failure_config=FailureConfig(max_failures=0)),
    )
    try:
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            return _read_result(Path(folder) / RESULT)
    finally:
        shutil.rmtree(storage, ignore_errors=True)


def _worker(config: dict) -> None:
    """One Ray Train worker: its share of the run; rank 0 reports the result."""
    import ray.train
    from ray.train.huggingface.transformers import prepare_trainer

    # The runner's per-stage thread budget, per worker (this process is a Ray Train actor).
    os.environ["SYNTHSCALE_TORCH_THREADS"] = str(config["threads"])
    result = train_replica(config["kind"], config["run"], config["rows"], Path(config["out"]),
                           prepare=prepare_trainer)
    if result is None:
        ray.train.report(metrics={})     # every rank reports once (a barrier in Ray Train v2)
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / RESULT).write_text(json.dumps(dataclasses.asdict(result)))
        ray.train.report(metrics={"final_loss": result.final_loss, "steps": result.steps},
                         checkpoint=ray.train.Checkpoint.from_directory(folder))


def _read_result(path: Path) -> TrainResult:
    data = json.loads(path.read_text())
    data["loss_curve"] = [(int(step), float(loss)) for step, loss in data["loss_curve"]]
    return TrainResult(**data)
