"""What a fit is asked to do: the options of the 1-D analysis and of the 2-D law.

Defaults live here, once; each field's `help` is what `python -m analysis --help`
prints. The sweep, the CLI and the notebook build a `FitOptions` (or a
`Fit2DOptions`) and hand it to analysis.report. No computation here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from analysis.chinchilla import DEFAULT_DELTA_2D
from analysis.power_law import DEFAULT_DELTA
from analysis.tables import COST_COLUMNS, Columns, PointColumns


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """How `analyze` / `run_fit` fit err(n) = E + A n^-alpha per group."""

    baseline: str = field(default="sft_teacher",
                          metadata={"help": "the group efficiency multipliers are measured "
                                            "against"})
    columns: Columns = field(default_factory=Columns,
                             metadata={"help": "which input column is group, size, error, seed"})
    form: str = field(default="offset",
                      metadata={"help": "the law fitted per group; offset: E + A n^-alpha, "
                                        "pure: A n^-alpha"})
    delta: float = field(default=DEFAULT_DELTA,
                         metadata={"help": "Huber delta on log residuals"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples (0 = no CIs)"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "bootstrap RNG seed"})
    cost_cols: tuple[str, ...] | None = field(
        default=None, metadata={"help": "cost columns to fit error against as well (unset: "
                                        f"those of {', '.join(COST_COLUMNS)} present)"})


@dataclass(frozen=True, kw_only=True)
class Fit2DOptions:
    """How `run_fit_2d` fits L(N, D) = E + A/N^alpha + B/D^beta (Epoch AI's protocol)."""

    columns: PointColumns = field(default_factory=PointColumns,
                                  metadata={"help": "which input column is N, D (or FLOP), "
                                                    "loss"})
    drop_highest: int = field(default=0,
                              metadata={"help": "drop the K highest-loss points first (Epoch "
                                                "AI's headline fit: 5)"})
    delta: float = field(default=DEFAULT_DELTA_2D,
                         metadata={"help": "Huber delta on log residuals"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples (0 = no CIs)"})
    level: float = field(default=0.95, metadata={"help": "confidence level of the intervals"})
    seed: int = field(default=0, metadata={"help": "bootstrap RNG seed"})
