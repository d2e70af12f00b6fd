"""Cross-field rules of an experiment config, which single-field types cannot express.

`check_consistency` runs after every load (`config.load_config`, `config_from_dict`), so a
config that would fail minutes into a sweep, or on a GPU node, fails at load instead, with
one line naming the file, line and field. This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config_schema import Where

if TYPE_CHECKING:       # config imports this module to run the checks
    from orchestrator.config import Config


def _check_unique_sorted(values: tuple[int, ...], path: str, where: Where) -> None:
    for i in range(1, len(values)):
        if values[i] <= values[i - 1]:
            raise where.error(f"{path}[{i}]", f"expected strictly increasing values, "
                                              f"got {values[i]} after {values[i - 1]}")


def check_consistency(config: Config, where: Where) -> None:
    """Cross-field rules that single-field types cannot express."""
    _check_unique_sorted(config.grid.sizes, "grid.sizes", where)
    if len(set(config.grid.seeds)) != len(config.grid.seeds):
        raise where.error("grid.seeds", f"expected distinct seeds, got {list(config.grid.seeds)}")
    if config.analysis.enabled and config.analysis.baseline not in config.grid.data_types \
            and len(config.grid.data_types) > 1:
        raise where.error("analysis.baseline", f"{config.analysis.baseline!r} is not one of "
                                               f"grid.data_types {list(config.grid.data_types)}")
    if len(set(config.grid.data_types)) != len(config.grid.data_types):
        raise where.error("grid.data_types", "expected each data type once")
    if config.per_step.early_stop and config.per_step.pit_rule != "first_zero":
        raise where.error("per_step.early_stop", "needs per_step.pit_rule: first_zero (the "
                          f"{config.per_step.pit_rule} rule reads every step's value)")
    dpo = config.train.dpo
    if dpo.loss_weights and len(dpo.loss_weights) != len(dpo.loss_type):
        raise where.error("train.dpo.loss_weights", f"expected one weight per loss type "
                                                    f"({len(dpo.loss_type)}), got {len(dpo.loss_weights)}")
    task = config.task
    if task.min_steps > task.max_steps:
        raise where.error("task.min_steps", f"expected <= task.max_steps ({task.max_steps}), "
                                            f"got {task.min_steps}")
    if config.teacher.pool_size and max(config.grid.sizes) > config.teacher.pool_size:
        raise where.error("teacher.pool_size", f"smaller than the largest grid size "
                                               f"{max(config.grid.sizes)}")
    if config.model.pretrain_docs and (config.model.base != "tiny" or task.name != "arith"):
        raise where.error("model.pretrain_docs", "pre-training is for the tiny base model on the "
                                                 "arith task only")
    if config.eval.pass_k and config.eval.pass_k_samples and config.eval.pass_k_samples < config.eval.pass_k:
        raise where.error("eval.pass_k_samples", f"expected >= eval.pass_k ({config.eval.pass_k})")
    if config.pool_size > task.n_train:
        field_name = "teacher.pool_size" if config.teacher.pool_size else "grid.sizes"
        raise where.error(field_name, f"a pool of {config.pool_size} exceeds task.n_train "
                                      f"({task.n_train}), the training problems available")
    if task.path and not Path(task.path).is_dir():
        raise where.error("task.path", f"no such folder: {task.path}")
    if config.teacher.kind == "oracle" and task.name != "arith":
        raise where.error("teacher.kind", f"the oracle teacher exists only for task 'arith'; "
                                          f"task {task.name!r} needs teacher.kind: model")
    if config.teacher.kind in ("model", "openai") and not config.teacher.model:
        raise where.error("teacher.model", f"teacher.kind is {config.teacher.kind!r} but no "
                                           "teacher.model is given")
    if config.teacher.kind == "openai" or config.generation.backend == "openai":
        check_openai(config, where)
    if "sft_human" in config.grid.data_types and task.name == "arith":
        raise where.error("grid.data_types", "sft_human needs human-written solutions "
                                             "(task gsm8k or math), not arith")
    targets = config.train.lora.target_modules
    if "all-linear" in targets and len(targets) > 1:
        raise where.error("train.lora.target_modules", f"'all-linear' stands alone, got "
                                                       f"{list(targets)}")
    if config.model.base == "tiny" and config.model.hidden_size % config.model.num_heads:
        raise where.error("model.num_heads", f"must divide model.hidden_size "
                                             f"({config.model.hidden_size})")
    check_generation(config, where)
    check_data_parallel(config, where)


def check_data_parallel(config: Config, where: Where) -> None:
    """train.use_gpu and train.strategy describe Ray Train workers, which exist only with
    train.num_workers > 1 (one worker trains in the stage's own process, on train.device)."""
    train = config.train
    if train.num_workers > 1:
        if train.strategy == "fsdp" and train.lora.enabled:
            raise where.error("train.strategy", "fsdp with train.lora is not supported: the "
                                                "stage saves a merged model, which a sharded "
                                                "peft model cannot give; use ddp")
        return
    for name, value, default in (("use_gpu", train.use_gpu, False),
                                 ("strategy", train.strategy, "ddp")):
        if value != default:
            raise where.error(f"train.{name}", f"applies to Ray Train workers, which need "
                                               f"train.num_workers > 1 (got {train.num_workers})")


def check_openai(config: Config, where: Where) -> None:
    """An OpenAI-compatible teacher or generator: a server to ask, and what the API accepts."""
    base_url = config.openai.base_url
    user = ("generation.backend" if config.generation.backend == "openai" else "teacher.kind")
    if not base_url.startswith(("http://", "https://")):
        raise where.error("openai.base_url", f"{user} is 'openai': expected the server's "
                                             f"http(s) URL, got {base_url!r}")
    if "@" in base_url.split("//", 1)[1].split("/", 1)[0]:
        raise where.error("openai.base_url", "credentials in the URL would be logged and hashed: "
                                             "give the key through openai.api_key_env")
    if len(config.generation.stop) > 4:
        raise where.error("generation.stop", "the OpenAI API takes at most 4 stop strings, got "
                                             f"{len(config.generation.stop)}")
    if config.generation.backend == "openai" and config.openai.endpoint != "completions":
        raise where.error("openai.endpoint", "generation.backend is 'openai': students are "
                                             "prompted as they were trained, with the plain "
                                             "prompt; expected completions, got "
                                             f"{config.openai.endpoint!r}")


def generating_stages(config: Config) -> tuple[str, ...]:
    """The resource groups of the stages that run the generation backend."""
    return ("sample", "rollouts", "evaluate") + (
        ("teacher_generate",) if config.teacher.kind == "model" else ())


def check_generation(config: Config, where: Where) -> None:
    """What vLLM would only reject on a GPU node, minutes into a sweep, checked at load."""
    gen = config.generation
    if any(not s for s in gen.stop):
        raise where.error("generation.stop", "an empty stop string would stop every completion "
                                             "at once")
    for section in ("sampling", "per_step", "eval", "teacher"):
        temperature = getattr(config, section).temperature
        if temperature > 2.0:
            raise where.error(f"{section}.temperature", f"expected <= 2 (vLLM's limit), "
                                                        f"got {temperature}")
    if gen.backend != "vllm":
        return
    for group in generating_stages(config):
        gpus = getattr(config.cluster.resources, group).num_gpus
        field_name = f"cluster.resources.{group}.num_gpus"
        if gpus <= 0:
            raise where.error(field_name, "generation.backend is vllm, which needs a GPU: "
                                          "give the stage num_gpus > 0")
        if gen.tensor_parallel_size > max(gpus, 1):
            raise where.error("generation.tensor_parallel_size",
                              f"{gen.tensor_parallel_size} GPUs per engine, but {field_name} "
                              f"reserves {gpus:g}")
        if gpus < 1 and gen.gpu_memory_utilization > gpus:
            raise where.error("generation.gpu_memory_utilization",
                              f"{gen.gpu_memory_utilization:g} of a GPU's memory, but {field_name} "
                              f"is {gpus:g}: stages sharing the GPU would not fit")
