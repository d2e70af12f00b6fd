"""The generation interface every backend implements.

`generate(prompts, request)` returns, for each prompt, `request.n`
`Completion`s. Temperature 0 means greedy decoding (then n must be 1).
Completions exclude the prompt and are cut before the first stop string; EOS
always ends a completion. `close()` frees the backend's model and memory: a
stage calls it when done, so a worker that runs the next stage starts clean.

This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int        # generated tokens, for cost accounting
    finished: bool         # ended by EOS or a stop string (not by the length limit)


@dataclass(frozen=True)
class GenerationRequest:
    """How to sample: what vLLM calls `SamplingParams`, for every backend."""

    n: int = 1                  # completions per prompt
    temperature: float = 0.0    # 0: greedy
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"generate: n must be >= 1, got {self.n}")
        if self.temperature == 0.0 and self.n != 1:
            raise ValueError("generate: greedy decoding (temperature 0) gives one completion; "
                             f"asked for n={self.n}")


class GenerationBackend(Protocol):
    def generate(self, prompts: Sequence[str], request: GenerationRequest) -> list[list[Completion]]:
        ...

    def close(self) -> None:
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
