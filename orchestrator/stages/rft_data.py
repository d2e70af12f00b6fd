"""Stage `rft_data`: rejection fine-tuning data from the SFT model's samples.

The correct samples, de-duplicated per problem (by normalised step list, or
exact text) and capped, plus, when `rft.include_teacher_data` is true, the n
teacher solutions themselves (D_syn union D+_pi_sft, a set union: samples
that repeat the teacher's solution are not added twice). The `sft` stage then
trains the *base* model on this set (Setlur et al. 2024, RFT).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, RFTConfig
from orchestrator.contract import Files, GridPoint, In, StageResult
from orchestrator.credit import rft_positives
from orchestrator.records import read_rows, write_rows

VERSION = "3"  # 2: self-samples duplicating the teacher solution are dropped; 3: "= 8." dedups as "= 8"

INPUTS = (In.SAMPLES, In.DATA)


@dataclass(frozen=True)
class RFTSelection:
    """The part of `rft` that builds the data; how it is trained on (rft.match_sft_steps)
    is the sft stage's, and must not move this stage's cache key."""

    max_per_problem: int
    dedup: str
    include_teacher_data: bool

    @classmethod
    def of(cls, rft: RFTConfig) -> RFTSelection:
        return cls(rft.max_per_problem, rft.dedup, rft.include_teacher_data)


@dataclass(frozen=True)
class RFTDataParams:
    rft: RFTSelection
    n: int

    @classmethod
    def from_config(cls, config: Config, point: GridPoint) -> RFTDataParams:
        return cls(RFTSelection.of(config.rft), point.n)


@dataclass(frozen=True)
class RFTDataResult(StageResult):
    examples: int
    teacher_examples: int
    self_positives: int
    correct_samples: int
    problems_covered: int


def run(params: RFTDataParams, inputs: dict[str, Path], out: Path) -> RFTDataResult:
    samples = read_rows(inputs[In.SAMPLES] / Files.SAMPLES)
    teacher = []
    if params.rft.include_teacher_data:
        teacher = [{"problem_id": r["problem_id"], "prompt": r["prompt"],
                    "completion": r["completion"], "source": "teacher"}
                   for r in read_rows(inputs[In.DATA] / Files.DATA, limit=params.n)]
    # D_syn union D+ is a set union: a self-sample with the teacher's steps adds nothing.
    known = {r["problem_id"]: [r["completion"]] for r in teacher}
    positives = rft_positives(samples, params.rft.max_per_problem, params.rft.dedup, known)
    rows = [{"problem_id": s["problem_id"], "prompt": s["prompt"], "completion": s["completion"],
             "source": "self"} for s in positives]
    if not rows and not teacher:
        raise RuntimeError("rft_data: the SFT model solved none of its training problems and "
                           "rft.include_teacher_data is false, so there is nothing to train on")
    write_rows(out / Files.DATA, teacher + rows)
    return RFTDataResult(len(teacher) + len(rows), len(teacher), len(rows),
                         sum(s["correct"] for s in samples), len({r["problem_id"] for r in rows}))
