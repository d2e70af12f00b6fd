"""TRL training shared by the SFT, DPO and base-model stages.

Owns the translation from our typed settings (`SFTSettings`, `DPOSettings`,
`TrainMethod`) to TRL's `SFTConfig`/`DPOConfig` and the settings that must hold on
every machine: no reporting integrations (the runner tracks results, stages must
not import mlflow); no checkpoints (a stage is the unit of resume).

Precision (docs/training.md): trained weights are fp32 unless `train.precision`
is `bf16`, because `bf16=True` in a Trainer only adds autocast and AdamW updates
of bf16 weights at lr 1e-6 mostly round to zero. Frozen weights (a LoRA base, the
DPO reference) take the maths' dtype: no update ever reaches them. A LoRA run
saves the merged full model, so every later stage loads it like any other; trained
models are saved in `model.dtype` (the dtype evaluation loads).

With `train.num_workers` > 1 the same trainers run on every worker of a Ray Train
`TorchTrainer` (`orchestrator.ray_train` launches them, `train_replica` is what each
worker runs); rank 0 alone saves the model and reports the result.

This module must not import ray or mlflow.
"""

from __future__ import annotations

import functools
import logging
import random
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator.config import (
    DPOSettings,
    LoraSettings,
    ModelLoading,
    SFTSettings,
    TrainMethod,
    TrainSettings,
)
from orchestrator.contract import Files, StageResult
from orchestrator.modeling import (
    free_memory,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    set_torch_threads,
    torch_dtype,
)


@dataclass(frozen=True)
class TrainResult(StageResult):
    """What one training run reports (the result of the sft, dpo and pre-training runs);
    `train_tokens` counts tokens forwarded per epoch x epochs (prompt + completion)."""

    examples: int               # records, or preference pairs, trained on
    steps: int
    final_loss: float
    device: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    precision: str = ""                 # the resolved train.precision
    trainable_parameters: int = 0       # LoRA: the adapters' parameters only


@dataclass(frozen=True)
class TrainRun:
    """One training run: the model it starts from, how it trains, its seed and device."""

    start_from: str             # model path or hub name
    model: ModelLoading         # dtype and trust_remote_code for loading it
    settings: TrainSettings     # SFTSettings or DPOSettings
    seed: int
    device: str = "auto"
    method: TrainMethod = TrainMethod()     # precision, LoRA, gradient checkpointing


logger = logging.getLogger(__name__)

PURE_BF16_WARNING = (
    "train.precision is bf16: weights, gradients and AdamW state are bfloat16, so updates "
    "smaller than about 1/256 of a weight round to zero (at learning rates near 1e-6 most "
    "do); use bf16-mixed unless memory forces pure bf16")


@dataclass(frozen=True)
class _Loaded:
    """What `_load` gives a run: where it trains, in which precision, on what."""

    device: str
    precision: str          # resolved: fp32, bf16-mixed or bf16
    tokenizer: Any
    model: Any


@functools.cache
def _checkpointing_field() -> str:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing`
    (5.x, the old name warns); use whichever this version has."""
    from transformers import TrainingArguments
    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _common_args(run: TrainRun, loaded: _Loaded, out: Path) -> dict:
    """TRL arguments every run shares, from the settings SFT and DPO have in common."""
    s = run.settings
    return dict(
        output_dir=str(out / "_trainer"),
        num_train_epochs=s.epochs,
        learning_rate=s.learning_rate,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,         # transformers 5: a float in [0, 1) is a ratio
        max_length=s.max_length,
        seed=run.seed,
        data_seed=run.seed,
        # autocast; the weights' dtype is set when loading (`_weights_dtype`). On a
        # CPU, accelerate's autocast is torch's CPU autocast.
        bf16=loaded.precision != "fp32",
        use_cpu=loaded.device != "cuda",
        **{_checkpointing_field(): run.method.gradient_checkpointing},
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **_parallel_args(run.method),
    )


def _parallel_args(method: TrainMethod) -> dict:
    """Arguments for a data-parallel worker (the process group exists already: Ray Train
    set it up); transformers wraps the model in DDP by itself when the world is > 1."""
    if method.parallel.num_workers == 1:
        return {}
    if method.parallel.strategy == "fsdp":
        # accelerate wraps each decoder layer (the model's `_no_split_modules`) by itself
        return dict(fsdp="full_shard auto_wrap")
    return dict(ddp_find_unused_parameters=False)


def _result(trainer, output, examples: int, tokens: int, precision: str,
            trainable: int) -> TrainResult:
    # With several workers, transformers logs the loss averaged over all of them.
    history = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    # Runs shorter than one logging interval log no loss: use the run's mean instead.
    final = history[-1][1] if history else float(output.training_loss)
    return TrainResult(examples, trainer.state.global_step, final, trainer.args.device.type,
                       history, precision, trainable, train_tokens=tokens)


def _count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts)["input_ids"])


def shuffled(records: list[dict], seed: int) -> list[dict]:
    """Seeded data order (the grid seed changes it)."""
    records = list(records)
    random.Random(seed).shuffle(records)
    return records


def sft_train(run: TrainRun, records: list[dict[str, str]], out: Path) -> TrainResult:
    """SFT with loss on completions only (`prompt`/`completion` records), or on whole
    documents (`text` records, used for pre-training); saves to `out/model`."""
    return _train("sft", run, records, out)


def dpo_train(run: TrainRun, pairs: list[dict[str, str]], out: Path) -> TrainResult:
    """DPO from `run.start_from` (also the frozen reference; with LoRA, the adapter-free
    model) on prompt/chosen/rejected pairs; saves to `out/model`."""
    return _train("dpo", run, pairs, out)


def _train(kind: str, run: TrainRun, rows: list[dict], out: Path) -> TrainResult:
    if run.method.parallel.num_workers > 1:
        from orchestrator.ray_train import train_data_parallel

        return train_data_parallel(kind, run, rows, out)
    return train_replica(kind, run, rows, out)


def train_replica(kind: str, run: TrainRun, rows: list[dict], out: Path,
                  prepare: Callable[[Any], Any] | None = None) -> TrainResult | None:
    """One process's share of a training run: the whole run in-process, or one data-parallel
    worker's (`prepare`: Ray Train's `prepare_trainer`). The result and the saved model
    come from rank 0; other ranks return None."""
    build = {"sft": _sft_trainer, "dpo": _dpo_trainer}[kind]
    try:
        trainer, loaded, texts = build(run, rows, out)
        if prepare is not None:
            trainer = prepare(trainer)
        return _train_and_save(trainer, loaded, texts, len(rows), run, out)
    finally:        # the trainer and model are unreachable now: give their memory back
        free_memory()


def _sft_trainer(run: TrainRun, records: list[dict[str, str]],
                 out: Path) -> tuple[Any, _Loaded, list[str]]:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    settings = run.settings
    if not isinstance(settings, SFTSettings):
        raise TypeError(f"sft_train needs SFTSettings, got {type(settings).__name__}")
    loaded = _load(run)
    is_text = "text" in records[0]
    args = SFTConfig(**_common_args(run, loaded, out), weight_decay=settings.weight_decay,
                     completion_only_loss=not is_text, dataset_text_field="text")
    data = Dataset.from_list(shuffled(records, run.seed))
    trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=data,
                         processing_class=loaded.tokenizer, peft_config=_peft_config(run.method))
    texts = [r["text"] if is_text else r["prompt"] + r["completion"] for r in records]
    return trainer, loaded, texts


def _dpo_trainer(run: TrainRun, pairs: list[dict[str, str]],
                 out: Path) -> tuple[Any, _Loaded, list[str]]:
    trainer, loaded, rows = dpo_trainer(run, pairs, out)
    texts = [r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows]
    return trainer, loaded, texts


def dpo_trainer(run: TrainRun, pairs: list[dict], out: Path) -> tuple[Any, _Loaded, list[dict]]:
    """TRL's DPOTrainer on `pairs`, its dataset tokenized as training will see it (a pair
    whose `rejected_eos` is false has no EOS on its rejected side); not yet trained."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings = run.settings
    if not isinstance(settings, DPOSettings):
        raise TypeError(f"dpo_train needs DPOSettings, got {type(settings).__name__}")
    loaded = _load(run)
    args = DPOConfig(**_common_args(run, loaded, out), beta=settings.beta,
                     loss_type=list(settings.loss_type),
                     loss_weights=list(settings.loss_weights) or None)
    rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"],
             "rejected_eos": bool(p.get("rejected_eos", True))} for p in pairs]
    data = Dataset.from_list(shuffled(rows, run.seed))
    # TRL 1.16 (DPOTrainer.__init__, _compute_loss): with a peft_config and no ref_model the
    # reference forward runs with the adapters disabled, i.e. the starting (SFT) model.
    ref_model = None if run.method.lora.enabled else _reference(run, loaded)
    trainer = DPOTrainer(model=loaded.model, ref_model=ref_model, args=args, train_dataset=data,
                         processing_class=loaded.tokenizer, peft_config=_peft_config(run.method))
    _drop_rejected_eos(trainer, loaded.tokenizer.eos_token_id)
    return trainer, loaded, rows


def _drop_rejected_eos(trainer, eos_id: int) -> None:
    """TRL 1.16 appends EOS to both sides of every plain-text pair (DPOTrainer._prepare_dataset,
    `add_eos`, no switch). A rejected side cut after the pit step (per_step.rejected:
    through_pit, pit_step) must not end in one, or DPO would also push down "stop after
    this step": its last token is dropped again from the tokenized dataset."""
    data = trainer.train_dataset
    if all(data["rejected_eos"]):
        return

    def strip(example: dict) -> dict:
        ids = example["rejected_ids"]
        if not example["rejected_eos"] and len(ids) > 1 and ids[-1] == eos_id:
            example["rejected_ids"] = ids[:-1]
        return example

    trainer.train_dataset = data.map(strip)


def _weights_dtype(precision: str, frozen: bool) -> str:
    """Trained weights are fp32 master weights unless pure bf16; frozen ones (a LoRA base,
    the DPO reference) take the maths' dtype."""
    if precision == "bf16" or (frozen and precision == "bf16-mixed"):
        return "bfloat16"
    return "float32"


def _load(run: TrainRun) -> _Loaded:
    set_torch_threads()
    device = pick_device(run.device)
    precision = run.method.resolved_precision(device)
    if precision == "bf16":
        warnings.warn(PURE_BF16_WARNING, stacklevel=3)
        logger.warning(PURE_BF16_WARNING)       # the stage's log (a Ray worker's stderr)
    dtype = _weights_dtype(precision, frozen=run.method.lora.enabled)
    model = load_causal_lm(run.start_from, replace(run.model, dtype=dtype), device)
    return _Loaded(device, precision, load_tokenizer(run.start_from, run.model), model)


def _reference(run: TrainRun, loaded: _Loaded):
    """DPO's frozen copy of the starting model (TRL would load it in the trained model's
    dtype: fp32, twice the memory bf16 autocast needs)."""
    dtype = _weights_dtype(loaded.precision, frozen=True)
    return load_causal_lm(run.start_from, replace(run.model, dtype=dtype), loaded.device)


def _peft_config(method: TrainMethod):
    """peft's LoraConfig for `train.lora`, or None for full fine-tuning."""
    lora: LoraSettings = method.lora
    if not lora.enabled:
        return None
    from peft import LoraConfig

    targets = lora.target_modules
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules="all-linear" if targets == ("all-linear",) else list(targets),
                      task_type="CAUSAL_LM")


def _train_and_save(trainer, loaded: _Loaded, texts: list[str], examples: int, run: TrainRun,
                    out: Path) -> TrainResult | None:
    """Train; `texts` are what one epoch forwards (for the token count). Only rank 0 (the
    only process of an in-process run) saves and returns the result."""
    # Counted before training: FSDP flattens and shards the parameters it wraps.
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    output = trainer.train()
    dtype = torch_dtype(run.model.dtype, loaded.device)
    if run.method.parallel.strategy == "fsdp" and run.method.parallel.num_workers > 1:
        _save_sharded(trainer, loaded.tokenizer, out, dtype)
    elif trainer.is_world_process_zero():
        _save(trainer.model, loaded.tokenizer, out, dtype)
    if not trainer.is_world_process_zero():
        return None
    tokens = int(_count_tokens(loaded.tokenizer, texts) * run.settings.epochs)
    result = _result(trainer, output, examples, tokens, loaded.precision, trainable)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
    return result


def _save(model: Any, tokenizer: Any, out: Path, dtype: Any) -> None:
    """The full model in the dtype evaluation loads (`model.dtype`): a LoRA model merged."""
    if hasattr(model, "merge_and_unload"):          # a peft model
        model = model.merge_and_unload()
    model.to(dtype).save_pretrained(out / Files.MODEL)
    tokenizer.save_pretrained(out / Files.MODEL)


def _save_sharded(trainer, tokenizer: Any, out: Path, dtype: Any) -> None:
    """FSDP: every rank takes part in gathering the full weights; rank 0 writes them."""
    state = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(out / Files.MODEL,
                              state_dict={k: v.to(dtype) for k, v in state.items()})
        tokenizer.save_pretrained(out / Files.MODEL)
