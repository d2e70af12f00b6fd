"""The plain-text summary the CLI prints and report.txt keeps.

Formatting only: it reads a FitReport's tables and never computes a number the
CSV files do not already hold.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # analysis.report imports this module
    from analysis.report import FitReport


def _num(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    if abs(value) < 1e-12:         # an optimiser's "zero" (E at its bound): not 3.89e-22
        return "0"
    return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.3e}"


def _ci(value, lo, hi) -> str:
    if isinstance(lo, float) and math.isnan(lo):
        return _num(value)
    return f"{_num(value)} [{_num(lo)}, {_num(hi)}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def fits_text(fits: pd.DataFrame, title: str) -> str:
    if fits.empty:
        return f"{title}\n  (no groups)"
    first = fits.iloc[0]
    ci = (f"{first['level']:.0%} percentile bootstrap CIs, {int(first['n_boot'])} resamples"
          if first["n_boot"] else "no bootstrap")
    rows = [[r.group, r.form, _ci(r.E, r.E_lo, r.E_hi), _ci(r.A, r.A_lo, r.A_hi),
             _ci(r.alpha, r.alpha_lo, r.alpha_hi), str(r.n_points), str(r.n_sizes),
             _num(r.r2_log), r.bootstrap] for r in fits.itertuples(index=False)]
    header = ["group", "law", "E", "A", "alpha", "points", "sizes", "R2(log)", "resampled"]
    return f"{title} ({ci})\n" + _table(header, rows)


def multipliers_text(table: pd.DataFrame, baseline: str) -> str:
    title = (f"Efficiency multipliers vs {baseline}: err_group(n) = err_{baseline}(k n); "
             "* = the baseline is extrapolated beyond its observed sizes")
    if table.empty:
        return f"{title}\n  (none)"
    rows = [[r.group, _num(r.n), _num(r.err), _ci(r.k, r.k_lo, r.k_hi) + ("*" if r.extrapolated
                                                                          else ""),
             _num(r.baseline_n)] for r in table.itertuples(index=False)]
    return f"{title}\n" + _table(["group", "n", "fitted err", "k [CI]", "baseline n = k n"], rows)


def paired_text(table: pd.DataFrame, baseline: str) -> str:
    title = (f"Paired differences vs {baseline}: mean over seeds of err(group, seed) - "
             f"err({baseline}, seed) at the same n (no fit; < 0: better than {baseline})")
    if table.empty:
        return f"{title}\n  (none)"
    rows = [[r.group, _num(r.n), str(r.seeds), _ci(r.diff, r.diff_lo, r.diff_hi), r.resampled]
            for r in table.itertuples(index=False)]
    return f"{title}\n" + _table(["group", "n", "seeds", "difference [CI]", "resampled"], rows)


def backtest_text(table: pd.DataFrame) -> str:
    title = ("Extrapolation backtest: each group's largest n predicted by the law fitted on "
             "the smaller sizes (band: the same bootstrap)")
    if table.empty:
        return f"{title}\n  (none: fewer than 4 sizes)"
    rows = [[r.group, _num(r.held_n), _num(r.observed),
             _ci(r.predicted, r.predicted_lo, r.predicted_hi), f"{r.rel_error:+.1%}",
             {True: "yes", False: "NO"}.get(r.covered, "-")]
            for r in table.itertuples(index=False)]
    return f"{title}\n" + _table(["group", "held-out n", "observed", "predicted [band]",
                                   "error", "covered"], rows)


def levels_text(table: pd.DataFrame, baseline: str) -> str:
    title = f"Multipliers at error levels: k = n_{baseline}(err) / n_group(err)"
    if table.empty:
        return f"{title}\n  (none)"
    rows = [[r.group, _num(r.error), _num(r.n_group), _num(r.n_baseline),
             _ci(r.k, r.k_lo, r.k_hi) + ("*" if r.extrapolated else "")]
            for r in table.itertuples(index=False)]
    return f"{title}\n" + _table(["group", "error", "n group", "n baseline", "k [CI]"], rows)


def format_report(report: FitReport) -> str:
    baseline = report.options.baseline
    parts = [fits_text(report.fits, "Power-law fits: err(n) = E + A * n^-alpha"),
             paired_text(report.paired, baseline),
             backtest_text(report.backtest),
             multipliers_text(report.multipliers, baseline),
             levels_text(report.multipliers_at_error, baseline)]
    for column, axis in report.against_compute.items():
        parts.append(fits_text(axis.table,
                               f"Against compute ({column}): err = E + A * {column}^-alpha"))
    warn = "\n".join(f"  - {w}" for w in report.warnings) or "  (none)"
    parts.append(f"Warnings:\n{warn}")
    return "\n\n".join(parts)
