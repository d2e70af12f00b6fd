"""Stage `pairs`: outcome-level preference pairs for `dpo_negative`.

Per problem, distinct correct self-samples against distinct incorrect ones
(up to `pairs.max_pairs_per_problem`), matched in a seeded order. Problems the
SFT model always or never solves give no pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import PairsConfig
from orchestrator.credit import outcome_pairs
from orchestrator.records import read_rows, write_rows

VERSION = "1"


@dataclass(frozen=True)
class PairsParams:
    pairs: PairsConfig
    seed: int


@dataclass(frozen=True)
class PairsResult:
    pairs: int
    problems: int


def run(params: PairsParams, inputs: dict[str, Path], out: Path) -> PairsResult:
    samples = read_rows(inputs["samples"] / "samples.jsonl")
    pairs = outcome_pairs(samples, params.pairs.max_pairs_per_problem, params.seed)
    write_rows(out / "pairs.jsonl", pairs)
    return PairsResult(len(pairs), len({p["problem_id"] for p in pairs}))
