"""What every benchmark returns, and a timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Ratio:
    name: str
    baseline: str
    optimised: str
    baseline_s: float
    optimised_s: float
    note: str = ""

    @property
    def speedup(self) -> float:
        return self.baseline_s / self.optimised_s if self.optimised_s else float("inf")


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
