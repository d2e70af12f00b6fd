"""Stage `sft`: supervised fine-tuning of the base model on a dataset.

Used by `sft_teacher` (the first n records of the teacher pool), `rft_self`
(self-generated positives) and `sft_human`. Loss on completions only; the grid
seed sets data order and the trainer's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import ModelConfig, SFTConfig
from orchestrator.modeling import model_path
from orchestrator.records import read_rows

VERSION = "1"


@dataclass(frozen=True)
class SFTParams:
    model: ModelConfig
    sft: SFTConfig
    device: str
    seed: int
    n: int | None = None        # train on the first n records of the data (None: all)


@dataclass(frozen=True)
class SFTResult:
    examples: int
    train_tokens: int
    steps: int
    final_loss: float
    device: str
    loss_curve: list = field(default_factory=list)


def run(params: SFTParams, inputs: dict[str, Path], out: Path) -> SFTResult:
    from orchestrator.training import sft_train

    records = read_rows(inputs["data"] / "data.jsonl", limit=params.n)
    if params.n is not None and len(records) < params.n:
        raise RuntimeError(f"sft: asked for {params.n} examples, the data has {len(records)}")
    if not records:
        raise RuntimeError("sft: the training data is empty")
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    stats = sft_train(model_path(inputs["base"]), params.model, rows, params.sft, params.seed, out,
                      params.device)
    return SFTResult(stats.examples, stats.train_tokens, stats.steps, stats.final_loss, stats.device,
                     stats.loss_curve)
