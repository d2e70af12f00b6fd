"""TRL training shared by the SFT, DPO and base-model stages.

Owns the translation from our typed settings (`SFTSettings`, `DPOSettings`) to
TRL's `SFTConfig`/`DPOConfig`
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

from orchestrator.config import DPOSettings, ModelLoading, SFTSettings, TrainSettings
from orchestrator.modeling import (
    free_memory,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    set_torch_threads,
)
from orchestrator.contract import Files, StageResult


@dataclass(frozen=True)
class TrainResult(StageResult):
    """What one training run reports (the result of the sft, dpo and pre-training runs);
    `train_tokens` counts tokens forwarded per epoch x epochs (prompt + completion)."""

    examples: int               # records, or preference pairs, trained on
    steps: int
    final_loss: float
    device: str
    loss_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)


@dataclass(frozen=True)
class TrainRun:
    """One training run: the model it starts from, how it trains, its seed and device."""

    start_from: str             # model path or hub name
    model: ModelLoading         # dtype and trust_remote_code for loading it
    settings: TrainSettings     # SFTSettings or DPOSettings
    seed: int
    device: str = "auto"


@functools.cache
def _checkpointing_field() -> str:
    """transformers renamed `gradient_checkpointing` to `activation_checkpointing`
    (5.x, the old name warns); use whichever this version has."""
    from transformers import TrainingArguments
    names = {f.name for f in fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


def _common_args(run: TrainRun, device: str, out: Path) -> dict:
    """TRL arguments every run shares, from the settings SFT and DPO have in common."""
    on_gpu = device == "cuda"
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


def _result(trainer, output, examples: int, tokens: int, device: str) -> TrainResult:
    history = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    # Runs shorter than one logging interval log no loss: use the run's mean instead.
    final = history[-1][1] if history else float(output.training_loss)
    return TrainResult(examples, trainer.state.global_step, final, device, history,
                       train_tokens=tokens)


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
    try:
        return _sft(run, records, out)
    finally:        # the trainer and model are unreachable now: give their memory back
        free_memory()


def dpo_train(run: TrainRun, pairs: list[dict[str, str]], out: Path) -> TrainResult:
    """DPO from `run.start_from` (also the frozen reference) on prompt/chosen/rejected pairs;
    saves to `out/model`."""
    try:
        return _dpo(run, pairs, out)
    finally:
        free_memory()


def _sft(run: TrainRun, records: list[dict[str, str]], out: Path) -> TrainResult:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    settings = run.settings
    if not isinstance(settings, SFTSettings):
        raise TypeError(f"sft_train needs SFTSettings, got {type(settings).__name__}")
    device, tokenizer, model = _load(run)
    is_text = "text" in records[0]
    args = SFTConfig(**_common_args(run, device, out), weight_decay=settings.weight_decay,
                     completion_only_loss=not is_text, dataset_text_field="text")
    data = Dataset.from_list(shuffled(records, run.seed))
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    texts = [r["text"] if is_text else r["prompt"] + r["completion"] for r in records]
    return _train_and_save(trainer, tokenizer, texts, len(records), run, out)


def _dpo(run: TrainRun, pairs: list[dict[str, str]], out: Path) -> TrainResult:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings = run.settings
    if not isinstance(settings, DPOSettings):
        raise TypeError(f"dpo_train needs DPOSettings, got {type(settings).__name__}")
    device, tokenizer, model = _load(run)
    args = DPOConfig(**_common_args(run, device, out), beta=settings.beta,
                     loss_type=list(settings.loss_type),
                     loss_weights=list(settings.loss_weights) or None)
    rows = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs]
    data = Dataset.from_list(shuffled(rows, run.seed))
    # ref_model=None: TRL keeps a frozen copy of the starting (SFT) model as the reference.
    trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                         processing_class=tokenizer)
    texts = [r["prompt"] + r["chosen"] for r in rows] + [r["prompt"] + r["rejected"] for r in rows]
    return _train_and_save(trainer, tokenizer, texts, len(rows), run, out)


def _load(run: TrainRun):
    set_torch_threads()
    device = pick_device(run.device)
    return (device, load_tokenizer(run.start_from, run.model),
            load_causal_lm(run.start_from, run.model, device))


def _train_and_save(trainer, tokenizer, texts: list[str], examples: int, run: TrainRun,
                    out: Path) -> TrainResult:
    """Train; `texts` are what one epoch forwards (for the token count)."""
    output = trainer.train()
    tokens = int(_count_tokens(tokenizer, texts) * run.settings.epochs)
    result = _result(trainer, output, examples, tokens, trainer.args.device.type)
    _save(trainer, tokenizer, out)
    return result


def _save(trainer: Any, tokenizer: Any, out: Path) -> None:
    trainer.model.save_pretrained(out / Files.MODEL)
    tokenizer.save_pretrained(out / Files.MODEL)
    shutil.rmtree(out / "_trainer", ignore_errors=True)
