"""The `train` section of the experiment schema: how weights are trained.

`TrainSettings` (shared by SFT and DPO) and its two kinds, LoRA, precision and data
parallelism (`TrainMethod`), and the section itself (`TrainConfig`). Split from
config.py, which re-exports every name here: import them from `orchestrator.config`.

This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from orchestrator.config_schema import knob
from orchestrator.contract import KEY_NEUTRAL


@dataclass(frozen=True)
class TrainSettings:
    """What SFT and DPO training share (training.py turns it into TRL's arguments)."""

    epochs: float = knob(3.0, "passes over the data", min=0.0)
    learning_rate: float = knob(3e-3, "peak learning rate (TRL's 2e-5 default is for 7B models)",
                                min=0.0)
    batch_size: int = knob(32, "examples per optimizer step per device", min=1)
    gradient_accumulation_steps: int = knob(1, "micro-batches per optimizer step", min=1)
    lr_scheduler: str = knob("cosine", "transformers scheduler name")
    warmup_ratio: float = knob(0.05, "fraction of steps warming up (transformers reads >= 1 "
                                "as a step count)", min=0.0, below=1.0)
    max_length: int = knob(256, "longest tokenized example (prompt + completion)", min=16)


@dataclass(frozen=True)
class SFTSettings(TrainSettings):
    weight_decay: float = knob(0.0, "AdamW weight decay", min=0.0)


@dataclass(frozen=True)
class DPOSettings(TrainSettings):
    # Redeclared only for their defaults: preference training starts from a trained model.
    epochs: float = knob(2.0, "passes over the preference pairs", min=0.0)
    learning_rate: float = knob(2e-4, "peak learning rate (TRL's 1e-6 default is for 7B models)",
                                min=0.0)
    beta: float = knob(0.1, "DPO temperature beta (strength of the KL anchor to the SFT model)",
                       min=0.0)
    loss_type: tuple[str, ...] = knob(("sigmoid",), "TRL DPO loss types; ['sigmoid', 'sft'] adds "
                                      "an NLL term on the chosen side (RPO, Pang et al. 2024)",
                                      nonempty=True)
    loss_weights: tuple[float, ...] = knob((), "weights of the loss types (empty: all 1.0)",
                                           min=0.0)


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapters (Hu et al. 2021) through peft, for SFT and DPO."""

    enabled: bool = knob(False, "train low-rank adapters instead of every weight; the stage saves "
                                "the merged full model, and DPO's reference is the adapter-free "
                                "model")
    r: int = knob(16, "adapter rank", min=1)
    alpha: float = knob(32.0, "adapter scale numerator (the update is scaled by alpha / r)",
                        min=0.0)
    dropout: float = knob(0.05, "dropout on the adapters' input", min=0.0, below=1.0)
    target_modules: tuple[str, ...] = knob(("all-linear",), "module names that get adapters; "
                                           "['all-linear']: every linear layer but the output "
                                           "head", nonempty=True)


PRECISIONS = ("auto", "fp32", "bf16-mixed", "bf16")


@dataclass(frozen=True)
class DataParallel:
    """Data-parallel training of one model on Ray Train (training.py, ray_train.py)."""

    num_workers: int = 1        # 1: in-process training, no Ray Train
    use_gpu: bool = False       # one GPU per worker (NCCL); otherwise CPU workers (gloo)
    strategy: str = "ddp"       # ddp | fsdp


@dataclass(frozen=True)
class TrainMethod:
    """How weights are trained, shared by SFT and DPO (their cache keys include it)."""

    precision: str = "auto"
    gradient_checkpointing: bool = False
    lora: LoraSettings = LoraSettings()
    # Added after artifacts existed; at one worker the run is the in-process one of before.
    # More workers are other numerics (another data order, all-reduced gradients): a new key.
    parallel: DataParallel = field(default=DataParallel(), metadata={KEY_NEUTRAL: True})

    def resolved_precision(self, device: str) -> str:
        """auto: bf16-mixed on a GPU, fp32 on a CPU (where bf16 autocast is slow)."""
        if self.precision == "auto":
            return "bf16-mixed" if device == "cuda" else "fp32"
        return self.precision


@dataclass(frozen=True)
class TrainConfig:
    sft: SFTSettings = knob(SFTSettings(), "supervised fine-tuning (sft_teacher, rft_self)")
    dpo: DPOSettings = knob(DPOSettings(), "preference training (dpo_negative, dpo_per_step; "
                                           "dpo_nll_only keeps only its NLL term)")
    device: Literal["auto", "cpu", "cuda"] = knob("auto", "auto: cuda when Ray gave the stage a GPU")
    precision: Literal[PRECISIONS] = knob(
        "auto", "fp32: fp32 weights and maths; bf16-mixed: fp32 master weights, optimizer state "
                "and updates, bf16 autocast for the maths; bf16: bf16 weights (half the memory, "
                "but small updates round to zero: warns); auto: bf16-mixed on a GPU, fp32 on a "
                "CPU. See docs/training.md")
    gradient_checkpointing: bool = knob(False, "recompute activations in the backward pass "
                                               "(less memory, about a third more compute)")
    lora: LoraSettings = knob(LoraSettings(), "LoRA adapters instead of full fine-tuning")
    num_workers: int = knob(1, "data-parallel workers training one SFT or DPO model on Ray Train "
                               "(1: in the stage's own process); each reserves what "
                               "cluster.resources.sft (.dpo) gives a stage; batch_size is per "
                               "worker. See docs/training.md", min=1)
    use_gpu: bool = knob(False, "with num_workers > 1: one GPU per worker (NCCL); otherwise CPU "
                                "workers (gloo)")
    strategy: Literal["ddp", "fsdp"] = knob(
        "ddp", "with num_workers > 1: ddp replicates the model on every worker; fsdp shards "
               "weights, gradients and optimizer state (a model that does not fit one device)")

    @property
    def method(self) -> TrainMethod:
        return TrainMethod(self.precision, self.gradient_checkpointing, self.lora,
                           DataParallel(self.num_workers, self.use_gpu, self.strategy))
