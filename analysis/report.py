"""The whole 1-D analysis: fits, bootstrap, multipliers, compute axis, tables, plots.

`analyze(frame, ...)` is pure: a standardised results frame in, a FitReport out.
`run_fit(results_csv, out_dir, ...)` is what the CLI and the sweep call: it reads
the results (and per_problem.csv beside them), runs `analyze`, and writes
fits.csv, multipliers.csv, multipliers_at_error.csv, curves.png,
multipliers.png, one fits_<cost>.csv / curves_<cost>.png per cost column, and
report.txt; `FitReport.files` lists them for the caller to log (this package
never imports mlflow, ray or torch).

A sweep too small to fit (one or two sizes) gets warnings, not an exception.

`run_fit_2d(points_csv, out_dir, ...)` does the same for the 2-D law
L(N, D) (analysis.chinchilla): fit_2d.json and fit_2d.png.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.bootstrap import Bootstrap, bootstrap_fit
from analysis.chinchilla import Fit2D, bootstrap_chinchilla, drop_highest_loss, fit_chinchilla
from analysis.efficiency import (
    LEVEL_COLUMNS,
    MULTIPLIER_COLUMNS,
    multiplier_warnings,
    multipliers_at_errors,
    multipliers_at_sizes,
)
from analysis.power_law import DEFAULT_DELTA, PowerLawFit, fit_groups
from analysis.summary import format_report
from analysis.tables import (
    InputError,
    cost_columns,
    drop_zero_errors,
    find_per_problem,
    load_per_problem,
    load_points_2d,
    load_results,
)

FIT_COLUMNS = ["group", "E", "A", "alpha", "E_lo", "E_hi", "A_lo", "A_hi", "alpha_lo", "alpha_hi",
               "form", "n_points", "n_sizes", "n_min", "n_max", "rmse_log", "r2_log", "objective",
               "axis", "bootstrap", "n_boot", "level"]


@dataclass
class FitReport:
    """What a fit produced. `fits` and `multipliers` are the tables written to CSV."""

    fits: pd.DataFrame
    multipliers: pd.DataFrame
    warnings: list[str]
    files: list[Path] = field(default_factory=list)
    multipliers_at_error: pd.DataFrame = field(default_factory=pd.DataFrame)
    compute_fits: dict[str, pd.DataFrame] = field(default_factory=dict)
    baseline: str = "sft_teacher"
    fit_objects: dict[str, PowerLawFit] = field(default_factory=dict, repr=False)
    bootstrap: Bootstrap | None = field(default=None, repr=False)
    frame: pd.DataFrame | None = field(default=None, repr=False)
    compute: dict[str, tuple] = field(default_factory=dict, repr=False)

    def text(self) -> str:
        return format_report(self)

    def metrics(self) -> dict[str, float]:
        """Flat finite numbers for an experiment tracker: per-group parameters and k at max n."""
        out: dict[str, float] = {}
        for row in self.fits.itertuples(index=False):
            for name in ("E", "A", "alpha", "alpha_lo", "alpha_hi", "r2_log"):
                out[f"{row.group}.{name}"] = float(getattr(row, name))
        if len(self.multipliers):
            last = self.multipliers.loc[self.multipliers.groupby("group")["n"].idxmax()]
            for row in last.itertuples(index=False):
                out[f"{row.group}.k_at_max_n"] = float(row.k)
                out[f"{row.group}.k_lo_at_max_n"] = float(row.k_lo)
                out[f"{row.group}.k_hi_at_max_n"] = float(row.k_hi)
        return {k: v for k, v in out.items() if np.isfinite(v)}


def fits_table(fits: dict[str, PowerLawFit], boot: Bootstrap | None, axis: str) -> pd.DataFrame:
    rows = []
    for group, fit in fits.items():
        ci = boot.interval(group) if boot is not None else {}
        row = {"group": group, "E": fit.E, "A": fit.A, "alpha": fit.alpha}
        for name in ("E", "A", "alpha"):
            row[f"{name}_lo"], row[f"{name}_hi"] = ci.get(name, (np.nan, np.nan))
        row.update(form=fit.form, n_points=fit.n_points, n_sizes=fit.n_sizes, n_min=fit.n_min,
                   n_max=fit.n_max, rmse_log=fit.rmse_log, r2_log=fit.r2_log,
                   objective=fit.objective, axis=axis,
                   bootstrap=boot.method.get(group, "") if boot else "none",
                   n_boot=boot.n_boot if boot else 0, level=boot.level if boot else np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=FIT_COLUMNS)


def ci_warnings(table: pd.DataFrame) -> list[str]:
    """Groups whose exponent is barely constrained by the data."""
    out = []
    for row in table.itertuples(index=False):
        if np.isfinite(row.alpha_lo) and row.alpha_hi > 3 * max(row.alpha_lo, 1e-9):
            out.append(f"{row.group}: alpha poorly identified on {row.axis}: {row.level:.0%} CI "
                       f"[{row.alpha_lo:.3g}, {row.alpha_hi:.3g}] spans more than a factor 3")
    return out


def _fit_axis(frame, per_problem, *, form, n_boot, level, seed, delta, axis):
    fits = fit_groups(frame, form=form, delta=delta)
    boot = None
    if n_boot > 0 and any(f.ok for f in fits.values()):
        boot = bootstrap_fit(frame, fits, per_problem=per_problem, n_boot=n_boot, level=level,
                             seed=seed, delta=delta)
    table = fits_table(fits, boot, axis)
    warnings = [w for f in fits.values() for w in f.warnings]
    warnings += (boot.warnings if boot else []) + ci_warnings(table)
    return fits, boot, table, warnings


def _usable_cost(frame: pd.DataFrame, column: str) -> str | None:
    """None if the cost column can be a log axis, else why not."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = int((values.isna() | (values <= 0)).sum())
    return None if bad == 0 else f"{bad} row(s) missing or <= 0"


def _compute_axes(frame, per_problem, cost_cols, options) -> tuple[dict, list[str]]:
    """Fits against each usable cost column. Its warnings are summarised to the groups that
    could not be fitted: identification caveats repeat those of the n axis."""
    compute, warnings = {}, []
    for column in cost_cols:
        why = _usable_cost(frame, column)
        if why:
            warnings.append(f"compute axis {column!r} skipped: {why}")
            continue
        # Cost varies between seeds at one n too; only a group measured at several
        # sizes has a compute axis (else the "curve" would be fitted to that noise).
        sizes = frame.groupby("group")["size"].nunique()
        one_size = sorted(sizes.index[sizes < 2])
        if one_size:
            warnings.append(f"against {column}: not fitted for {', '.join(one_size)} "
                            "(measured at one size only)")
        kept = frame[~frame["group"].isin(one_size)]
        if kept.empty:
            continue
        axis_frame = kept.assign(size=pd.to_numeric(kept[column]).astype(float))
        fits, boot, table, _ = _fit_axis(axis_frame, per_problem, axis=column, **options)
        compute[column] = (axis_frame, fits, boot, table)
        failed = sorted(g for g, fit in fits.items() if not fit.ok)
        if failed:
            warnings.append(f"against {column}: not fitted for {', '.join(failed)} "
                            "(fewer than 2 distinct values)")
    return compute, warnings


def _multipliers(fits, boot, baseline, frame):
    if not fits[baseline].ok:
        return (pd.DataFrame(columns=MULTIPLIER_COLUMNS), pd.DataFrame(columns=LEVEL_COLUMNS),
                [f"baseline {baseline} could not be fitted: no efficiency multipliers"])
    sizes = {g: np.unique(part["size"]) for g, part in frame.groupby("group")}
    at_sizes = multipliers_at_sizes(fits, baseline, sizes, boot)
    at_errors = multipliers_at_errors(fits, baseline, boot)
    return at_sizes, at_errors, multiplier_warnings(at_sizes, fits)


def analyze(frame: pd.DataFrame, baseline: str = "sft_teacher", *,
            per_problem: pd.DataFrame | None = None, form: str = "offset", n_boot: int = 1000,
            level: float = 0.95, seed: int = 0, delta: float = DEFAULT_DELTA,
            cost_cols: list[str] | None = None, source: str = "results") -> FitReport:
    """Fit every group of a standardised frame (analysis.tables.standardize) against size,
    bootstrap CIs, multipliers against `baseline`, and fits against each cost column."""
    if baseline not in set(frame["group"]):
        groups = ", ".join(sorted(set(frame["group"])))
        raise InputError(f"{source}: baseline {baseline!r} is not a group in column "
                         f"{frame.attrs.get('columns', {}).get('group', 'group')!r} "
                         f"(has: {groups})")
    frame, warnings = drop_zero_errors(frame)
    options = dict(form=form, n_boot=n_boot, level=level, seed=seed, delta=delta)
    size_name = frame.attrs.get("columns", {}).get("size", "n")
    fits, boot, table, w = _fit_axis(frame, per_problem, axis=size_name, **options)
    at_sizes, at_errors, w_mult = _multipliers(fits, boot, baseline, frame)
    cost_cols = cost_columns(frame) if cost_cols is None else cost_cols
    compute, w_cost = _compute_axes(frame, per_problem, cost_cols, options)
    return FitReport(table, at_sizes, warnings + w + w_mult + w_cost, [], at_errors,
                     {c: v[3] for c, v in compute.items()}, baseline, fits, boot, frame, compute)


def _save(fig, path: Path, files: list[Path]) -> None:
    fig.savefig(path, dpi=130)
    files.append(path)


def write_report(report: FitReport, out_dir: str | Path, *, plots: bool = True) -> FitReport:
    """Write the report's tables, plots and text into out_dir; fills report.files."""
    from analysis.plots import plot_curves, plot_multipliers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    tables = {"fits.csv": report.fits, "multipliers.csv": report.multipliers,
              "multipliers_at_error.csv": report.multipliers_at_error}
    tables.update({f"fits_{c}.csv": t for c, t in report.compute_fits.items()})
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        files.append(out / name)
    if plots and report.frame is not None:
        names = report.frame.attrs.get("columns", {})
        size_col, error_col = names.get("size", "n"), names.get("error", "test_error")
        _save(plot_curves(report.frame, report.fit_objects, report.bootstrap,
                          size_label=size_col, error_label=error_col), out / "curves.png", files)
        _save(plot_multipliers(report.multipliers), out / "multipliers.png", files)
        for column, (frame, fits, boot, _) in report.compute.items():
            _save(plot_curves(frame, fits, boot, size_label=column, error_label=error_col),
                  out / f"curves_{column}.png", files)
    (out / "report.txt").write_text(report.text() + "\n")
    report.files = files + [out / "report.txt"]
    return report


def run_fit(results_csv: str | Path, out_dir: str | Path, baseline: str = "sft_teacher", *,
            group_col: str = "data_type", size_col: str = "n", error_col: str = "test_error",
            seed_col: str = "seed", per_problem: str | Path | bool | None = None,
            plots: bool = True, **options) -> FitReport:
    """Read results_csv, fit, and write everything into out_dir (see module docstring).

    per_problem: None = use per_problem.csv beside results_csv when present,
    False = never, a path = that file. Other options go to `analyze` (form,
    n_boot, level, seed, delta, cost_cols). Raises InputError on bad input.
    """
    frame = load_results(results_csv, group_col=group_col, size_col=size_col,
                         error_col=error_col, seed_col=seed_col)
    if per_problem is None:
        per_problem = find_per_problem(results_csv)
    problems = None
    if per_problem:
        problems = load_per_problem(per_problem, group_col=group_col, size_col=size_col,
                                    seed_col=seed_col)
    report = analyze(frame, baseline, per_problem=problems, source=str(results_csv), **options)
    return write_report(report, out_dir, plots=plots)


@dataclass
class Fit2DReport:
    fit: Fit2D
    files: list[Path]
    warnings: list[str]
    n_dropped: int = 0

    def as_dict(self) -> dict:
        out: dict = dict(self.fit.params())
        for name, (lo, hi) in self.fit.intervals().items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        out.update(n_points=self.fit.n_points, n_dropped=self.n_dropped,
                   objective=self.fit.objective, rmse_log=self.fit.rmse_log,
                   r2_log=self.fit.r2_log, level=self.fit.level,
                   n_boot=0 if self.fit.boot is None else len(self.fit.boot),
                   protocol="Besiroglu et al. 2024: sum of Huber(delta) on log loss, LSE form, "
                            "L-BFGS from 4,500 grid starts; percentile bootstrap over points",
                   warnings=self.warnings)
        return out

    def text(self) -> str:
        ci = self.fit.intervals()
        lines = [f"L(N, D) = E + A/N^alpha + B/D^beta on {self.fit.n_points} points "
                 f"({self.n_dropped} highest-loss dropped); R2(log) {self.fit.r2_log:.4f}"]
        for name, value in self.fit.params().items():
            lo, hi = ci.get(name, (float("nan"), float("nan")))
            lines.append(f"  {name:<6} {value:10.4g}   [{lo:.4g}, {hi:.4g}]")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def run_fit_2d(points_csv: str | Path, out_dir: str | Path, *, n_col: str = "Model Size",
               d_col: str | None = None, flop_col: str = "Training FLOP",
               loss_col: str = "loss", drop_highest: int = 0, n_boot: int = 1000,
               level: float = 0.95, seed: int = 0, delta: float = 1e-3,
               plots: bool = True) -> Fit2DReport:
    """Fit the 2-D law to a points CSV and write fit_2d.json (+ fit_2d.png) into out_dir."""
    from analysis.plots import plot_2d

    points = load_points_2d(points_csv, n_col=n_col, d_col=d_col, flop_col=flop_col,
                            loss_col=loss_col)
    kept = drop_highest_loss(points, "loss", drop_highest)
    fit = fit_chinchilla(kept["N"], kept["D"], kept["loss"], delta=delta)
    if n_boot > 0:
        bootstrap_chinchilla(fit, kept["N"], kept["D"], kept["loss"], n_boot=n_boot, seed=seed,
                             delta=delta, level=level)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Fit2DReport(fit, [], list(fit.warnings), len(points) - len(kept))
    (out / "fit_2d.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    report.files.append(out / "fit_2d.json")
    if plots:
        _save(plot_2d(kept["N"], kept["D"], kept["loss"], fit.params(),
                      d_label=f"D (training tokens = {flop_col} / 6N)" if d_col is None
                      else f"D ({d_col})",
                      n_label=f"N ({n_col})"), out / "fit_2d.png", report.files)
    return report
