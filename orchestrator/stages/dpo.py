"""Stage `dpo`: DPO from the SFT model on preference pairs.

Used by `dpo_negative` (outcome pairs) and `dpo_per_step` (pairs at the first
pit). The SFT model is both the starting point and the frozen reference
(Setlur et al. 2024), via TRL's `DPOTrainer`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import DPOConfig, ModelConfig
from orchestrator.modeling import model_path
from orchestrator.records import read_rows

VERSION = "1"


@dataclass(frozen=True)
class DPOParams:
    model: ModelConfig
    dpo: DPOConfig
    device: str
    seed: int


@dataclass(frozen=True)
class DPOResult:
    pairs: int
    train_tokens: int
    steps: int
    final_loss: float
    device: str
    loss_curve: list = field(default_factory=list)


def run(params: DPOParams, inputs: dict[str, Path], out: Path) -> DPOResult:
    from orchestrator.training import dpo_train

    pairs = read_rows(inputs["pairs"] / "pairs.jsonl")
    if not pairs:
        raise RuntimeError("dpo: no preference pairs to train on (the SFT model's samples gave "
                           "none); raise sampling.samples_per_problem or use larger sizes n")
    stats = dpo_train(model_path(inputs["model"]), params.model, pairs, params.dpo, params.seed, out,
                      params.device)
    return DPOResult(stats.examples, stats.train_tokens, stats.steps, stats.final_loss, stats.device,
                     stats.loss_curve)
