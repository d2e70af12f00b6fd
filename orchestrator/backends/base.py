"""The generation interface every backend implements.

`generate(prompts, n, temperature, top_p, max_new_tokens, stop, seed)` returns,
for each prompt, n `Completion`s. temperature 0 means greedy decoding (then n
must be 1). Completions exclude the prompt and are cut before the first stop
string; EOS always ends a completion.

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


class GenerationBackend(Protocol):
    def generate(self, prompts: Sequence[str], n: int = 1, temperature: float = 0.0,
                 top_p: float = 1.0, max_new_tokens: int = 64, stop: Sequence[str] = (),
                 seed: int = 0) -> list[list[Completion]]:
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def check_request(n: int, temperature: float) -> None:
    if n < 1:
        raise ValueError(f"generate: n must be >= 1, got {n}")
    if temperature == 0.0 and n != 1:
        raise ValueError("generate: greedy decoding (temperature 0) gives one completion; "
                         f"asked for n={n}")
