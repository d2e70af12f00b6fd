"""TRL training shared by the SFT, DPO and base-model stages.

Owns the translation from our typed configs to TRL's `SFTConfig`/`DPOConfig`
and the settings that must hold on every machine: TRL 1.x defaults to bf16 and
gradient checkpointing, which a CPU cannot use, so both follow the device; no
reporting integrations (the runner tracks results, stages must not import
mlflow); no checkpoints (a stage is the unit of resume).

This module must not import ray or mlflow.
"""

from __future__ import annotations

import functools
import random
import shutil
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from orchestrator.config import DPOConfig, ModelConfig, SFTConfig
from orchestrator.modeling import load_causal_lm, load_tokenizer, pick_device, set_torch_threads


@dataclass(frozen=True)
class TrainStats:
    examples: int
    train_tokens: int           # tokens forwarded per epoch x epochs (prompt + completion)
    steps: int
    final_loss: float
    device: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)


@functools.cache
def _checkpointing_field() -> str:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing`
    (5.x, the old name warns); use whichever this version has."""
    from transformers import TrainingArguments
    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _common_args(out: Path, device: str, seed: int, lr_scheduler: str, warmup_ratio: float,
                 batch_size: int, accumulation: int, epochs: float, learning_rate: float) -> dict:
    on_gpu = device == "cuda"
    return dict(
        output_dir=str(out / "_trainer"),
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,           # transformers 5: a float in [0, 1) is a ratio
        seed=seed,
        data_seed=seed,
        bf16=on_gpu,
        use_cpu=not on_gpu,
        # tiny models: recompute costs more than it saves
        **{_checkpointing_field(): False},
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def _stats(trainer, output, examples: int, tokens: int, device: str) -> TrainStats:
    history = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    # Runs shorter than one logging interval log no loss: use the run's mean instead.
    final = history[-1][1] if history else float(output.training_loss)
    return TrainStats(examples, tokens, trainer.state.global_step, final, device, history)


def _count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer(texts)["input_ids"])


def shuffled(records: list[dict], seed: int) -> list[dict]:
    """Seeded data order (the grid seed changes it)."""
    records = list(records)
    random.Random(seed).shuffle(records)
    return records


def sft_train(model_path: str, model_cfg: ModelConfig, records: list[dict[str, str]],
              cfg: SFTConfig, seed: int, out: Path, device: str = "auto") -> TrainStats:
    """SFT with loss on completions only (`prompt`/`completion` records), or on whole
    documents (`text` records, used for pre-training); saves to `out/model`."""
    from datasets import Dataset
    from trl import SFTConfig as TRLSFTConfig
    from trl import SFTTrainer

    set_torch_threads()
    device = pick_device(device)
    tokenizer = load_tokenizer(model_path, model_cfg)
    model = load_causal_lm(model_path, model_cfg, device)
    is_text = "text" in records[0]
    args = TRLSFTConfig(
        **_common_args(out, device, seed, cfg.lr_scheduler, cfg.warmup_ratio, cfg.batch_size,
                       cfg.gradient_accumulation_steps, cfg.epochs, cfg.learning_rate),
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=not is_text,
        dataset_text_field="text",
    )
    data = Dataset.from_list(shuffled(records, seed))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    output = trainer.train()
    texts = [r["text"] if is_text else r["prompt"] + r["completion"] for r in records]
    stats = _stats(trainer, output, len(records), int(_count_tokens(tokenizer, texts) * cfg.epochs), device)
    _save(trainer, tokenizer, out)
    return stats


def dpo_train(model_path: str, model_cfg: ModelConfig, pairs: list[dict[str, str]],
              cfg: DPOConfig, seed: int, out: Path, device: str = "auto") -> TrainStats:
    """DPO from `model_path` (also the frozen reference) on prompt/chosen/rejected pairs."""
    from datasets import Dataset
    from trl import DPOConfig as TRLDPOConfig
    from trl import DPOTrainer

    set_torch_threads()
    device = pick_device(device)
    tokenizer = load_tokenizer(model_path, model_cfg)
    model = load_causal_lm(model_path, model_cfg, device)
    args = TRLDPOConfig(
        **_common_args(out, device, seed, cfg.lr_scheduler, cfg.warmup_ratio, cfg.batch_size,
                       cfg.gradient_accumulation_steps, cfg.epochs, cfg.learning_rate),
        beta=cfg.beta,
        loss_type=list(cfg.loss_type),
        loss_weights=list(cfg.loss_weights) or None,
        max_length=cfg.max_length,
    )
    rows = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    data = Dataset.from_list(shuffled(rows, seed))
    # ref_model=None: TRL keeps a frozen copy of the starting (SFT) model as the reference.
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                         processing_class=tokenizer)
    output = trainer.train()
    texts = [r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows]
    stats = _stats(trainer, output, len(rows), int(_count_tokens(tokenizer, texts) * cfg.epochs), device)
    _save(trainer, tokenizer, out)
    return stats


def _save(trainer: Any, tokenizer: Any, out: Path) -> None:
    trainer.model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    shutil.rmtree(out / "_trainer", ignore_errors=True)
