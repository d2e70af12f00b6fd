"""Figures: scaling curves (log-log), multipliers, and the 2-D law.

Each function takes tables/fits and returns a matplotlib Figure; saving is the
caller's business (analysis.report), so the notebook can show the same figures.
Figures are built with `matplotlib.figure.Figure`, not pyplot: no backend is
chosen, no global figure list grows when a sweep fits many times, and
`fig.savefig` renders with Agg.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.bootstrap import Bootstrap, band
from analysis.chinchilla import predict_2d
from analysis.power_law import PowerLawFit

AXIS_LABELS = {
    "n": "n (synthetic training examples)",
    "test_error": "test error (1 - pass@1)",
    "train_tokens": "training tokens (whole stage chain)",
    "generated_tokens": "generated tokens (whole stage chain)",
    "device_seconds": "device time (device-seconds, whole stage chain)",
    "wall_seconds": "wall time (s, whole stage chain)",
}


def axis_label(column: str) -> str:
    return AXIS_LABELS.get(column, column)


def _plain_log_y(ax) -> None:
    """Error axes span less than a decade: label 0.1, 0.2, 0.3, 0.5 rather than 10^-1 only.
    A (nearly) flat curve gets at least a factor 1.5 of height, not a magnified 0.1%."""
    low, high = ax.get_ylim()
    if high < 1.5 * low:
        middle = np.sqrt(low * high)
        low, high = middle / 1.25, middle * 1.25
        ax.set_ylim(low, high)
    _plain_log_ticks(ax.yaxis, high / low)
    if np.divide(*ax.get_xlim()[::-1]) < 10:
        _plain_log_ticks(ax.xaxis, np.divide(*ax.get_xlim()[::-1]))


def _plain_log_ticks(axis, span: float) -> None:
    subs = (1.0, 2.0, 3.0, 5.0) if span > 3 else tuple(np.arange(1.0, 10.0))
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def group_colours(groups) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10"]
    return {g: cmap(i % 10) for i, g in enumerate(sorted(groups))}


def _plot_points(ax, part: pd.DataFrame, colour) -> None:
    ax.scatter(part["size"], part["error"], s=10, color=colour, alpha=0.35, linewidths=0)
    cells = part.groupby("size")["error"].agg(["mean", "min", "max", "count"]).reset_index()
    spread = [cells["mean"] - cells["min"], cells["max"] - cells["mean"]]
    ax.errorbar(cells["size"], cells["mean"], yerr=spread, fmt="o", ms=4, color=colour,
                capsize=2, lw=1)


def _plot_fit(ax, fit: PowerLawFit, boot: Bootstrap | None, colour, label) -> None:
    grid = np.geomspace(fit.n_min, fit.n_max, 100)
    wide = np.geomspace(fit.n_min / 1.5, fit.n_max * 1.5, 100)
    ax.plot(wide, fit.predict(wide), color=colour, lw=0.8, ls=":")
    ax.plot(grid, fit.predict(grid), color=colour, lw=1.6, label=label)
    if boot is not None and fit.group in boot.params:
        lo, hi = band(boot.params[fit.group], grid, boot.level)
        ax.fill_between(grid, lo, hi, color=colour, alpha=0.18, lw=0)


def _fit_label(fit: PowerLawFit, x: str) -> str:
    if fit.form == "pure":
        return f"{fit.group}: {fit.A:.3g} {x}^-{fit.alpha:.2f}"
    return f"{fit.group}: {fit.E:.3f} + {fit.A:.3g} {x}^-{fit.alpha:.2f}"


def plot_curves(frame: pd.DataFrame, fits: dict[str, PowerLawFit], boot: Bootstrap | None = None,
                *, size_label: str = "n", error_label: str = "test_error",
                title: str | None = None) -> Figure:
    """Log-log error vs size: seed points, cell means with min-max bars, fits, CI bands."""
    fig = Figure(figsize=(7.5, 5))
    ax = fig.subplots()
    colours = group_colours(frame["group"].unique())
    for group, part in frame.groupby("group", sort=True):
        _plot_points(ax, part, colours[group])
        fit = fits.get(group)
        if fit is not None and fit.ok:
            x = "n" if size_label == "n" else "x"
            _plot_fit(ax, fit, boot, colours[group], _fit_label(fit, x))
        else:
            ax.plot([], [], color=colours[group], label=f"{group} (not fitted)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_y(ax)
    ax.set_xlabel(axis_label(size_label))
    ax.set_ylabel(axis_label(error_label))
    level = f"{boot.level:.0%} bootstrap CI" if boot is not None else "no CI"
    symbol = "" if size_label == "n" else f"; x = {size_label}"
    ax.set_title(title or f"{axis_label(error_label)} vs {size_label} (bands: {level}{symbol})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


K_RANGE = (1 / 16, 16.0)      # multipliers shown; beyond it a point or bound is an arrow


def _k_label(value: float, _=None) -> str:
    return f"{value:g}" if value >= 1 else f"1/{1 / value:g}"


def _k_bars(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper error-bar lengths, each bound clipped to K_RANGE (a missing bound: none)."""
    low_edge, high_edge = K_RANGE
    k = np.clip(rows["k"].to_numpy(float), low_edge, high_edge)
    lo = np.clip(rows["k_lo"].fillna(rows["k"]).to_numpy(float), low_edge, high_edge)
    hi = np.clip(rows["k_hi"].fillna(rows["k"]).to_numpy(float), low_edge, high_edge)
    return np.clip(k - lo, 0, None), np.clip(hi - k, 0, None)


def _edge_arrows(ax, x: np.ndarray, values: np.ndarray, colour, filled: bool = True) -> None:
    """Arrows at the top and bottom edges for values beyond K_RANGE (an unbounded CI)."""
    low_edge, high_edge = K_RANGE
    for beyond, edge, marker in ((values > high_edge, high_edge, "^"),
                                 (values < low_edge, low_edge, "v")):
        if beyond.any():
            ax.plot(x[beyond], np.full(beyond.sum(), edge), marker, color=colour, ms=7,
                    mfc=colour if filled else "white", clip_on=False)


def plot_multipliers(table: pd.DataFrame, title: str | None = None) -> Figure:
    """k (with CI bars) against the group's size on a log axis from 1/16 to 16 with
    labelled ticks; hollow markers where k is extrapolated; a bound (or k) beyond that
    range is an arrow at the edge (a CI unbounded above: the baseline never gets there)."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    finite = table[np.isfinite(table["k"])] if len(table) else table
    colours = group_colours(table["group"].unique()) if len(table) else {}
    groups = sorted(finite["group"].unique()) if len(finite) else []
    low_edge, high_edge = K_RANGE
    for i, group in enumerate(groups):
        rows = finite[finite["group"] == group]
        x = rows["n"].to_numpy() * 1.04 ** (i - (len(groups) - 1) / 2)  # dodge overlapping bars
        colour = colours[group]
        k = rows["k"].to_numpy(float)
        shown = np.clip(k, low_edge, high_edge)
        ax.errorbar(x, shown, yerr=_k_bars(rows), fmt="-", color=colour, capsize=2, lw=1,
                    label=group)
        out = rows["extrapolated"].astype(bool).to_numpy()
        inside = (k >= low_edge) & (k <= high_edge)
        ax.plot(x[~out & inside], shown[~out & inside], "o", color=colour)
        ax.plot(x[out & inside], shown[out & inside], "o", mfc="white", color=colour)
        _edge_arrows(ax, x, rows["k_hi"].fillna(rows["k"]).to_numpy(float), colour, False)
        _edge_arrows(ax, x, rows["k_lo"].fillna(rows["k"]).to_numpy(float), colour, False)
        _edge_arrows(ax, x, k, colour)          # drawn last: k's own arrow is never hidden
    baseline = table["baseline"].iloc[0] if len(table) else "baseline"
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(low_edge / 1.15, high_edge * 1.15)
    ax.set_yticks([2.0 ** e for e in range(-4, 5)])
    if groups:                                  # the grid's sizes, labelled plainly
        ax.set_xticks(sorted(finite["n"].unique()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(_k_label))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(axis_label("n"))
    ax.set_ylabel(f"efficiency multiplier k vs {baseline}")
    ax.set_title(title or f"k: err(n) = err_{baseline}(k n); hollow = baseline extrapolated;\n"
                          "arrow = beyond the axis (filled: k, open: a CI bound)", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    if groups:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_paired(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Each group's paired difference from the baseline against n, with its CI; 0 = no
    difference. Linear in the difference (it can change sign), log in n."""
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.subplots()
    groups = sorted(table["group"].unique()) if len(table) else []
    colours = group_colours(groups)
    for i, group in enumerate(groups):
        rows = table[table["group"] == group]
        x = rows["n"].to_numpy(float) * 1.04 ** (i - (len(groups) - 1) / 2)  # dodge the bars
        diff = rows["diff"].to_numpy(float)
        lo = np.nan_to_num(diff - rows["diff_lo"].to_numpy(float))
        hi = np.nan_to_num(rows["diff_hi"].to_numpy(float) - diff)
        ax.errorbar(x, diff, yerr=(lo, hi), fmt="o-", color=colours[group], capsize=3, lw=1,
                    label=group)
    baseline = table["baseline"].iloc[0] if len(table) else "baseline"
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    if groups:
        ax.set_xticks(sorted(table["n"].unique()))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
    ax.set_xlabel(axis_label("n"))
    ax.set_ylabel(f"test error minus {baseline}'s (same seed)")
    ax.set_title(title or f"paired difference from {baseline}, seed by seed, per n\n(bars: "
                          "bootstrap CI over seeds and test problems; below 0 = better)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig


def plot_2d(points: pd.DataFrame, params: dict[str, float], *,
            n_label: str = "N (parameters)", d_label: str = "D (training tokens)") -> Figure:
    """Loss vs D coloured by N, with the fitted law at a few model sizes; and fit vs data.
    points: columns N, D, loss (analysis.tables.load_points_2d)."""
    n, d, loss = (points[c].to_numpy(float) for c in ("N", "D", "loss"))
    fig = Figure(figsize=(11, 4.5))
    ax, ax2 = fig.subplots(1, 2)
    norm = LogNorm(n.min(), n.max())
    viridis = matplotlib.colormaps["viridis"]
    sc = ax.scatter(d, loss, c=n, cmap="viridis", norm=norm, s=12)
    d_grid = np.geomspace(d.min(), d.max(), 100)
    for size in np.geomspace(n.min(), n.max(), 5):
        ax.plot(d_grid, predict_2d(params, size, d_grid), color=viridis(norm(size)), lw=1.2)
    fig.colorbar(sc, ax=ax, label=n_label)
    ax.set(xscale="log", yscale="log", xlabel=d_label, ylabel="loss (nats/token)",
           title="L(N, D) = E + A/N^alpha + B/D^beta; lines at 5 model sizes")
    _plain_log_y(ax)
    fitted = predict_2d(params, n, d)
    ax2.scatter(fitted, loss, s=10, c=n, cmap="viridis", norm=norm)
    lims = [min(fitted.min(), loss.min()), max(fitted.max(), loss.max())]
    ax2.plot(lims, lims, color="grey", lw=0.8, ls="--")
    ax2.set(xlabel="fitted loss (nats/token)", ylabel="observed loss (nats/token)",
            title="fit vs data")
    for a in (ax, ax2):
        a.title.set_fontsize(10)
        a.grid(True, which="both", alpha=0.25)
    fig.tight_layout()
    return fig
