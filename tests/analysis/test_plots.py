"""What a reader sees in the multipliers plot: labelled k ticks on a log axis from 1/16 to
16, every point inside it, and an arrow at the edge for what lies beyond (an unbounded CI)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from analysis.plots import K_RANGE, plot_multipliers


def _table() -> pd.DataFrame:
    return pd.DataFrame({
        "group": ["rft_self"] * 3 + ["dpo_per_step"] * 3, "baseline": "sft_teacher",
        "n": [250, 500, 1000] * 2,
        "k": [1.8, 2.1, 2.5, 6.0, 40.0, np.inf],
        "k_lo": [1.2, 1.5, 1.6, 3.0, 8.0, np.nan],
        "k_hi": [2.5, 3.0, np.inf, 12.0, np.inf, np.nan],
        "extrapolated": [False, False, True, False, True, True]})


def test_k_axis_is_labelled_and_clipped_with_arrows_beyond():
    fig = plot_multipliers(_table())
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["1/16", "1/8", "1/4", "1/2", "1", "2", "4", "8", "16"]
    assert ax.get_yscale() == "log"
    low, high = ax.get_ylim()
    assert low < K_RANGE[0] and high > K_RANGE[1] and high < 2 * K_RANGE[1]
    ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines if isinstance(line, Line2D)
                         and len(line.get_ydata())])
    ys = ys[np.isfinite(ys)]
    assert (ys >= K_RANGE[0] - 1e-9).all() and (ys <= K_RANGE[1] + 1e-9).all()
    up = [line for line in ax.lines if line.get_marker() == "^"]
    # k = 40 beyond the top (filled), and the unbounded upper CIs of n = 500 and 1000 (open)
    assert sum(len(line.get_xdata()) for line in up) == 3
    assert [t.get_text() for t in ax.get_xticklabels()] == ["250", "500", "1000"]
