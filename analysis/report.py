"""The whole 1-D analysis: fits, bootstrap, multipliers, compute axes, tables, plots.

`analyze(frame, options)` is pure: a standardised results frame and a FitOptions
in, a FitReport out. `run_fit(results_csv, out_dir, options)` is what the CLI and
the sweep call: it reads the results (and per_problem.csv beside them), runs
`analyze`, and writes fits.csv, multipliers.csv, multipliers_at_error.csv,
paired.csv (analysis.paired: each row minus the baseline, seed by seed, no fit),
backtest.csv (analysis.backtest: each group's largest n predicted from the smaller ones),
curves.png, multipliers.png, paired.png, one fits_<cost>.csv / curves_<cost>.png per cost
column, and report.txt; `FitReport.files` lists them for the caller to log (this
package never imports mlflow, ray or torch).

A sweep too small to fit (one or two sizes) gets warnings, not an exception.

`run_fit_2d(points_csv, out_dir, options)` does the same for the 2-D law
L(N, D) (analysis.chinchilla) with a Fit2DOptions: fit_2d.json and fit_2d.png.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.backtest import backtest
from analysis.bootstrap import Bootstrap, bootstrap_fit
from analysis.chinchilla import Fit2D, bootstrap_chinchilla, drop_highest_loss, fit_chinchilla
from analysis.efficiency import (
    LEVEL_COLUMNS,
    MULTIPLIER_COLUMNS,
    multiplier_warnings,
    multipliers_at_errors,
    multipliers_at_sizes,
)
from analysis.options import Fit2DOptions, FitOptions
from analysis.paired import paired_differences
from analysis.plots import plot_2d, plot_curves, plot_multipliers, plot_paired
from analysis.power_law import PowerLawFit, fit_groups
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
# Frozen, so one shared default is safe (ruff's B008 cannot see that across modules).
FIT_DEFAULTS, FIT_2D_DEFAULTS = FitOptions(), Fit2DOptions()
BACKTEST_BOOT = 400   # resamples of the held-out prediction's band (a second bootstrap per group)


@dataclass(kw_only=True)
class AxisFit:
    """Every group fitted against one x axis: the sizes n, or one cost column."""

    axis: str                          # the x column as the input names it: n, train_tokens, ...
    frame: pd.DataFrame = field(repr=False)  # standardised rows; `size` holds this axis
    fits: dict[str, PowerLawFit] = field(repr=False)
    bootstrap: Bootstrap | None = field(repr=False)
    table: pd.DataFrame                # one row per group (FIT_COLUMNS), as written to CSV


@dataclass(kw_only=True)
class FitReport:
    """What `analyze` found. Its tables are what `write_report` writes to CSV."""

    options: FitOptions
    against_n: AxisFit                   # fits.csv, curves.png
    against_compute: dict[str, AxisFit]  # per cost column: fits_<c>.csv, curves_<c>.png
    multipliers: pd.DataFrame            # multipliers.csv: k at each observed size
    multipliers_at_error: pd.DataFrame   # multipliers_at_error.csv: k at error levels
    paired: pd.DataFrame                 # paired.csv: err - the baseline's, seed by seed, per n
    backtest: pd.DataFrame               # backtest.csv: the largest n predicted from the rest
    warnings: list[str]
    files: list[Path] = field(default_factory=list)  # filled by write_report

    @property
    def fits(self) -> pd.DataFrame:
        """The fits against n, one row per group: fits.csv."""
        return self.against_n.table

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
        if len(self.paired):
            last = self.paired.loc[self.paired.groupby("group")["n"].idxmax()]
            for row in last.itertuples(index=False):
                for name in ("diff", "diff_lo", "diff_hi"):
                    out[f"{row.group}.paired_{name}_at_max_n"] = float(getattr(row, name))
        for row in self.backtest.itertuples(index=False):
            out[f"{row.group}.backtest_rel_error"] = float(row.rel_error)
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


def _fit_axis(frame: pd.DataFrame, per_problem: pd.DataFrame | None, options: FitOptions,
              axis: str) -> tuple[AxisFit, list[str]]:
    """Fit and bootstrap every group of frame against its `size` column, named axis."""
    fits = fit_groups(frame, form=options.form, delta=options.delta)
    boot = None
    if options.n_boot > 0 and any(f.ok for f in fits.values()):
        boot = bootstrap_fit(frame, fits, per_problem=per_problem, n_boot=options.n_boot,
                             level=options.level, seed=options.seed)
    table = fits_table(fits, boot, axis)
    warnings = [w for f in fits.values() for w in f.warnings]
    warnings += (boot.warnings if boot else []) + ci_warnings(table)
    return AxisFit(axis=axis, frame=frame, fits=fits, bootstrap=boot, table=table), warnings


def _usable_cost(frame: pd.DataFrame, column: str) -> str | None:
    """None if the cost column can be a log axis, else why not."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = int((values.isna() | (values <= 0)).sum())
    return None if bad == 0 else f"{bad} row(s) missing or <= 0"


def _compute_axes(frame: pd.DataFrame, per_problem: pd.DataFrame | None, options: FitOptions
                  ) -> tuple[dict[str, AxisFit], list[str]]:
    """Fits against each usable cost column. Its warnings are summarised to the groups that
    could not be fitted: identification caveats repeat those of the n axis."""
    columns = cost_columns(frame) if options.cost_cols is None else options.cost_cols
    compute, warnings = {}, []
    for column in columns:
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
        compute[column], _ = _fit_axis(axis_frame, per_problem, options, column)
        failed = sorted(g for g, fit in compute[column].fits.items() if not fit.ok)
        if failed:
            warnings.append(f"against {column}: not fitted for {', '.join(failed)} "
                            "(fewer than 2 distinct values)")
    return compute, warnings


def _multipliers(against_n: AxisFit, baseline: str):
    fits, boot = against_n.fits, against_n.bootstrap
    if not fits[baseline].ok:
        return (pd.DataFrame(columns=MULTIPLIER_COLUMNS), pd.DataFrame(columns=LEVEL_COLUMNS),
                [f"baseline {baseline} could not be fitted: no efficiency multipliers"])
    sizes = {g: np.unique(part["size"]) for g, part in against_n.frame.groupby("group")}
    at_sizes = multipliers_at_sizes(fits, baseline, sizes, boot)
    at_errors = multipliers_at_errors(fits, baseline, boot)
    return at_sizes, at_errors, multiplier_warnings(at_sizes, fits)


def analyze(frame: pd.DataFrame, options: FitOptions = FIT_DEFAULTS, *,
            per_problem: pd.DataFrame | None = None, source: str = "results") -> FitReport:
    """Fit every group of a standardised frame (analysis.tables.standardize) against size,
    bootstrap CIs, multipliers against the baseline, and fits against each cost column.

    per_problem: per-problem results (analysis.tables.load_per_problem) to resample
    test problems too; source names the input in errors.
    """
    baseline = options.baseline
    if baseline not in set(frame["group"]):
        groups = ", ".join(sorted(set(frame["group"])))
        raise InputError(f"{source}: baseline {baseline!r} is not a group in column "
                         f"{options.columns.group!r} (has: {groups})")
    frame, warnings = drop_zero_errors(frame)
    against_n, w_n = _fit_axis(frame, per_problem, options, options.columns.size)
    at_sizes, at_errors, w_mult = _multipliers(against_n, baseline)
    paired, w_paired = paired_differences(frame, baseline, per_problem, n_boot=options.n_boot,
                                          level=options.level, seed=options.seed)
    held_out, w_back = backtest(frame, per_problem, form=options.form, delta=options.delta,
                                n_boot=min(options.n_boot, BACKTEST_BOOT), level=options.level,
                                seed=options.seed)
    against_compute, w_cost = _compute_axes(frame, per_problem, options)
    return FitReport(options=options, against_n=against_n, against_compute=against_compute,
                     multipliers=at_sizes, multipliers_at_error=at_errors, paired=paired,
                     backtest=held_out,
                     warnings=warnings + w_n + w_mult + w_paired + w_back + w_cost)


def _save(fig: Figure, path: Path, files: list[Path]) -> None:
    fig.savefig(path, dpi=130)
    files.append(path)


def _plot_axis(fit: AxisFit, error_label: str) -> Figure:
    return plot_curves(fit.frame, fit.fits, fit.bootstrap, size_label=fit.axis,
                       error_label=error_label)


def write_report(report: FitReport, out_dir: str | Path, *, plots: bool = True) -> FitReport:
    """Write the report's tables, plots and text into out_dir; fills report.files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    tables = {"fits.csv": report.fits, "multipliers.csv": report.multipliers,
              "multipliers_at_error.csv": report.multipliers_at_error,
              "paired.csv": report.paired, "backtest.csv": report.backtest}
    tables.update({f"fits_{c}.csv": a.table for c, a in report.against_compute.items()})
    for name, table in tables.items():
        table.to_csv(out / name, index=False)
        files.append(out / name)
    if plots:
        error_label = report.options.columns.error
        _save(_plot_axis(report.against_n, error_label), out / "curves.png", files)
        _save(plot_multipliers(report.multipliers), out / "multipliers.png", files)
        _save(plot_paired(report.paired), out / "paired.png", files)
        for column, axis in report.against_compute.items():
            _save(_plot_axis(axis, error_label), out / f"curves_{column}.png", files)
    (out / "report.txt").write_text(report.text() + "\n")
    report.files = files + [out / "report.txt"]
    return report


def run_fit(results_csv: str | Path | Sequence[str | Path], out_dir: str | Path,
            options: FitOptions = FIT_DEFAULTS, *, per_problem: str | Path | bool | None = None,
            plots: bool = True) -> FitReport:
    """Read results_csv, fit, and write everything into out_dir (see module docstring).

    Several results files are variants (e.g. runs/demo and runs/demo,train.sft.epochs=2):
    overlaid in one fit, each group renamed `<variant>:<group>` after its folder (see
    `load_variants`).

    per_problem: None = use per_problem.csv beside each results file when present,
    False = never, a path = that file (one results file only; its columns named as
    options.columns say). Raises InputError on bad input.
    """
    paths = [results_csv] if isinstance(results_csv, (str, Path)) else list(results_csv)
    if len(paths) > 1:
        if per_problem not in (None, False):
            raise InputError("--per-problem names one file: with several results files, each "
                             "one's per_problem.csv beside it is used")
        frame, problems, options = load_variants(paths, options, per_problem is None)
        report = analyze(frame, options, per_problem=problems, source=" + ".join(map(str, paths)))
        return write_report(report, out_dir, plots=plots)
    frame = load_results(paths[0], options.columns)
    if per_problem is None:
        per_problem = find_per_problem(paths[0])
    problems = load_per_problem(per_problem, options.columns) if per_problem else None
    report = analyze(frame, options, per_problem=problems, source=str(paths[0]))
    return write_report(report, out_dir, plots=plots)


def variant_names(paths: Sequence[str | Path]) -> list[str]:
    """A name per results file: its folder's (runs/<name>/results.csv), numbered if two
    folders share a name."""
    names = [Path(p).resolve().parent.name or str(p) for p in paths]
    return [f"{name}#{i + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def load_variants(paths: Sequence[str | Path], options: FitOptions, with_per_problem: bool
                  ) -> tuple[pd.DataFrame, pd.DataFrame | None, FitOptions]:
    """Several results files as one standardised frame whose groups are
    `<variant>:<group>`, their per_problem.csv files likewise (only if every file has one:
    a mix would resample test problems for some curves and not others), and the options
    with the baseline named in the first variant unless it already names a variant's group."""
    names = variant_names(paths)
    frames, problems = [], []
    for name, path in zip(names, paths, strict=True):
        frame = load_results(path, options.columns)
        frames.append(frame.assign(group=name + ":" + frame["group"]))
        found = find_per_problem(path) if with_per_problem else None
        if found is not None:
            table = load_per_problem(found, options.columns)
            problems.append(table.assign(group=name + ":" + table["group"]))
    per_problem = pd.concat(problems, ignore_index=True) if len(problems) == len(paths) else None
    baseline = options.baseline if ":" in options.baseline else f"{names[0]}:{options.baseline}"
    return (pd.concat(frames, ignore_index=True), per_problem,
            dataclasses.replace(options, baseline=baseline))


@dataclass(kw_only=True)
class Fit2DReport:
    """What `run_fit_2d` found and wrote."""

    fit: Fit2D
    n_dropped: int          # highest-loss points left out before fitting
    warnings: list[str]
    files: list[Path] = field(default_factory=list)

    def as_dict(self) -> dict:
        """fit_2d.json: estimates, their CIs, goodness of fit and the protocol."""
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


def run_fit_2d(points_csv: str | Path, out_dir: str | Path,
               options: Fit2DOptions = FIT_2D_DEFAULTS, *, plots: bool = True) -> Fit2DReport:
    """Fit the 2-D law to a points CSV and write fit_2d.json (+ fit_2d.png) into out_dir."""
    columns = options.columns
    points = load_points_2d(points_csv, columns)
    kept = drop_highest_loss(points, options.drop_highest)
    fit = fit_chinchilla(kept, delta=options.delta)
    if options.n_boot > 0:
        bootstrap_chinchilla(fit, kept, n_boot=options.n_boot, seed=options.seed,
                             level=options.level)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Fit2DReport(fit=fit, n_dropped=len(points) - len(kept), warnings=list(fit.warnings))
    (out / "fit_2d.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    report.files.append(out / "fit_2d.json")
    if plots:
        d_label = (f"D (training tokens = {columns.flop} / 6N)" if columns.d is None
                   else f"D ({columns.d})")
        _save(plot_2d(kept, fit.params(), d_label=d_label, n_label=f"N ({columns.n})"),
              out / "fit_2d.png", report.files)
    return report
