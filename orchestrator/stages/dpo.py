"""Stage `dpo`: DPO from the SFT model on preference pairs.

Used by `dpo_negative` (outcome pairs), `dpo_per_step` (pairs at the first
pit) and its control `dpo_nll_only` (the same pairs, NLL of the chosen side only). The SFT model is both the starting point and the frozen reference
(Setlur et al. 2024), via TRL's `DPOTrainer`; with `train.lora` the reference is
the adapter-free model, which is the same SFT model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from orchestrator.config import Config, DPOSettings, ModelLoading, TrainMethod
from orchestrator.contract import Files, GridPoint, In
from orchestrator.modeling import model_path
from orchestrator.records import read_rows
from orchestrator.training import TrainResult, TrainRun, dpo_train

VERSION = "1"
INPUTS = (In.MODEL, In.PAIRS)


@dataclass(frozen=True)
class DPOParams:
    model: ModelLoading
    dpo: DPOSettings
    device: str
    method: TrainMethod         # precision, LoRA (the reference is then the adapter-free model)
    seed: int

    @classmethod
    def from_config(cls, config: Config, point: GridPoint, nll_only: bool = False) -> DPOParams:
        """`nll_only`: the dpo_nll_only control: TRL's `sft` loss alone (NLL of the chosen
        sides), weighted as it is in the configured loss (1.0 where it has no `sft` term)."""
        dpo = config.train.dpo
        if nll_only:
            weights = dict(zip(dpo.loss_type, dpo.loss_weights or [1.0] * len(dpo.loss_type),
                               strict=True))
            dpo = replace(dpo, loss_type=("sft",), loss_weights=(weights.get("sft", 1.0),))
        return cls(config.model.loading, dpo, config.train.device, config.train.method,
                   point.seed)


def run(params: DPOParams, inputs: dict[str, Path], out: Path) -> TrainResult:
    pairs = read_rows(inputs[In.PAIRS] / Files.PAIRS)
    if not pairs:
        raise RuntimeError("dpo: no preference pairs to train on (the SFT model's samples gave "
                           "none); raise sampling.samples_per_problem or use larger sizes n")
    start = TrainRun(model_path(inputs[In.MODEL]), params.model, params.dpo, params.seed,
                     params.device, params.method)
    return dpo_train(start, pairs, out)
