"""Stage `sft`: supervised fine-tuning of the base model on a dataset.

Used by `sft_teacher` (the first n records of the teacher pool), `rft_self`
(self-generated positives, all of them) and `sft_human`. Loss on completions
only; the grid seed sets data order and the trainer's seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestrator.config import Config, ModelLoading, SFTSettings, TrainMethod
from orchestrator.contract import KEY_NEUTRAL, Files, GridPoint, In
from orchestrator.modeling import model_path
from orchestrator.records import read_rows
from orchestrator.training import TrainResult, TrainRun, sft_train

VERSION = "1"
INPUTS = (In.BASE, In.DATA)


@dataclass(frozen=True)
class SFTParams:
    model: ModelLoading
    sft: SFTSettings
    device: str
    method: TrainMethod         # precision, LoRA, gradient checkpointing
    seed: int
    n: int | None = None        # train on the first n records of the data (None: all)
    # rft_self with rft.match_sft_steps: epochs scaled to the sft_teacher baseline's optimiser
    # steps on this many examples (0: the configured epochs)
    match_steps_of: int = field(default=0, metadata={KEY_NEUTRAL: True})

    @classmethod
    def from_config(cls, config: Config, point: GridPoint, first_n: bool = True) -> SFTParams:
        """`first_n`: train on the data's first n records (a prefix of the teacher pool or the
        human data); otherwise on all of it (RFT data, already built for n)."""
        return cls(config.model.loading, config.train.sft, config.train.device,
                   config.train.method, point.seed, point.n if first_n else None)


def matched_epochs(settings: SFTSettings, baseline_n: int, examples: int) -> float:
    """Epochs over `examples` records that take as many optimiser steps as `settings.epochs`
    over `baseline_n`: transformers runs ceil(epochs x steps per epoch) steps."""
    per_step = settings.batch_size * settings.gradient_accumulation_steps
    return settings.epochs * math.ceil(baseline_n / per_step) / math.ceil(examples / per_step)


def run(params: SFTParams, inputs: dict[str, Path], out: Path) -> TrainResult:
    records = read_rows(inputs[In.DATA] / Files.DATA, limit=params.n)
    if params.n is not None and len(records) < params.n:
        raise RuntimeError(f"sft: asked for {params.n} examples, the data has {len(records)}")
    if not records:
        raise RuntimeError("sft: the training data is empty")
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in records]
    settings = params.sft
    if params.match_steps_of:
        settings = replace(settings, epochs=matched_epochs(settings, params.match_steps_of,
                                                           len(rows)))
    start = TrainRun(model_path(inputs[In.BASE]), params.model, settings, params.seed,
                     params.device, params.method)
    return sft_train(start, rows, out)
