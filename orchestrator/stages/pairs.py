"""Stage `pairs`: outcome-level preference pairs for `dpo_negative`.

Per problem, distinct correct self-samples against distinct incorrect ones
(up to `pairs.max_pairs_per_problem`), matched in a seeded order. Problems the
SFT model always or never solves give no pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, PairsConfig
from orchestrator.contract import Files, GridPoint, In, StageResult
from orchestrator.credit import outcome_pairs
from orchestrator.records import read_rows, write_rows

VERSION = "1"
INPUTS = (In.SAMPLES,)


@dataclass(frozen=True)
class PairsParams:
    pairs: PairsConfig
    seed: int

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> PairsParams:
        return cls(config.pairs, point.seed)


@dataclass(frozen=True)
class PairsResult(StageResult):
    pairs: int
    problems: int


def run(params: PairsParams, inputs: dict[str, Path], out: Path) -> PairsResult:
    samples = read_rows(inputs[In.SAMPLES] / Files.SAMPLES)
    pairs = outcome_pairs(samples, params.pairs.max_pairs_per_problem, params.seed)
    write_rows(out / Files.PAIRS, pairs)
    return PairsResult(len(pairs), len({p["problem_id"] for p in pairs}))
