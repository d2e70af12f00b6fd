"""The stage contract, what every stage shares: where in the grid it runs, its named inputs and
files, and the result contract (cost accounting reads these fields, typed).

A stage is `run(params, inputs, out) -> Result` with `params` a typed config
slice its module builds itself (`Params.from_config(config, ...)`), `inputs`
the artifact folders of its upstream stages by input name (`In`), files in
`out` named by `Files`, and a `Result` subclass of `StageResult`.

This module must not import ray, mlflow, torch, the runner or planning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# `<store>/_responses/`: an API backend's per-request response cache. It sits beside the stage
# folders, outside every attempt's temporary folder, so a stage that crashed or was killed
# and runs again pays only for the requests its last attempt did not get answered.
RESPONSES = "_responses"


# Metadata of a field added to a stage's params after artifacts exist, whose default is
# what the stage did before: `field(default=..., metadata={KEY_NEUTRAL: True})`. At its
# default it stays out of the cache key (planning.plan.cache_key), so finished artifacts
# keep their keys; set to anything else, it moves them. Such a default must never change.
KEY_NEUTRAL = "key_neutral"


@dataclass(frozen=True)
class GridPoint:
    """The grid coordinates a per-cell stage runs for (shared stages have none)."""

    n: int          # synthetic data size
    seed: int


class In:
    """Names under which a stage receives its upstream artifact folders."""

    BASE = "base"           # a model to fine-tune from scratch of the synthetic data (base model)
    MODEL = "model"         # a trained model (SFT model, or the model being evaluated)
    DATA = "data"           # a training set of prompt/completion records (`Files.DATA`)
    SAMPLES = "samples"     # graded self-samples (`Files.SAMPLES`)
    ROLLOUTS = "rollouts"   # per-step Monte Carlo values (`Files.ROLLOUTS`)
    PAIRS = "pairs"         # preference pairs (`Files.PAIRS`)


class Files:
    """The files stages write in their artifact folder and read from their inputs'."""

    DATA = "data.jsonl"                 # teacher_generate, human_data, rft_data
    SAMPLES = "samples.jsonl"           # sample
    ROLLOUTS = "rollouts.jsonl"         # rollouts
    PAIRS = "pairs.jsonl"               # pairs, step_pairs
    PREDICTIONS = "predictions.jsonl"   # evaluate
    MODEL = "model"                     # base_model, sft, dpo: a saved Hugging Face folder


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """Base of every stage's result: the cost contract.

    Cost accounting (results.csv, MLflow chain_* metrics) sums these fields over
    a cell's chain; a stage that trains or generates sets them, others leave 0.
    `wall_seconds` is set by the store when the stage finishes.
    """

    train_tokens: int = 0         # tokens forwarded in training (per epoch x epochs)
    generated_tokens: int = 0     # tokens sampled from a model
    wall_seconds: float = 0.0     # of the execution that produced the artifact


def response_cache_dir(out: Path) -> Path:
    """The response cache of the store that `out` (`<store>/<stage>/<attempt>/`) belongs to."""
    return Path(out).resolve().parent.parent / RESPONSES
