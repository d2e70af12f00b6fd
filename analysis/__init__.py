"""Scaling-law analysis: how fast error falls with n per data type, and how many
times more data-efficient each type is than a baseline.

Pure functions over pandas DataFrames, used by the CLI (`python -m analysis`),
by the sweep (which calls `run_fit(results_csv, out_dir, FitOptions(...))` at its
end and logs `FitReport.files` and `FitReport.metrics()` to its MLflow run) and by
scaling_curves.ipynb. This package never imports mlflow, ray, torch or the
orchestrator.

Modules: tables (reading and checking input; `Columns` names its columns),
options (`FitOptions`, `Fit2DOptions`), power_law (1-D fits), bootstrap (CIs),
efficiency (multipliers), chinchilla (the 2-D law, Epoch AI's protocol), optimize
(batched solvers), plots, summary (text), report (the whole run), cli.
"""

from analysis.bootstrap import Bootstrap, band, bootstrap_fit, percentile_interval
from analysis.chinchilla import Fit2D, bootstrap_chinchilla, fit_chinchilla, predict_2d
from analysis.efficiency import (
    multiplier_at_size,
    multipliers_at_errors,
    multipliers_at_sizes,
    size_for_error,
)
from analysis.options import Fit2DOptions, FitOptions
from analysis.plots import plot_2d, plot_curves, plot_multipliers
from analysis.power_law import PowerLawFit, fit_groups, fit_power_law, predict
from analysis.report import (
    AxisFit,
    Fit2DReport,
    FitReport,
    analyze,
    run_fit,
    run_fit_2d,
    write_report,
)
from analysis.tables import (
    Columns,
    InputError,
    PointColumns,
    find_per_problem,
    load_per_problem,
    load_points_2d,
    load_results,
    results_from_mlflow_runs,
    standardize,
)

efficiency_multiplier = multiplier_at_size  # the name STYLE.md uses

__all__ = [
    "AxisFit", "Bootstrap", "Columns", "Fit2D", "Fit2DOptions", "Fit2DReport", "FitOptions",
    "FitReport", "InputError", "PointColumns", "PowerLawFit", "analyze", "band",
    "bootstrap_chinchilla", "bootstrap_fit", "efficiency_multiplier", "find_per_problem",
    "fit_chinchilla", "fit_groups", "fit_power_law", "load_per_problem", "load_points_2d",
    "load_results", "multiplier_at_size", "multipliers_at_errors", "multipliers_at_sizes",
    "percentile_interval", "plot_2d", "plot_curves", "plot_multipliers", "predict",
    "predict_2d", "results_from_mlflow_runs", "run_fit", "run_fit_2d", "size_for_error",
    "standardize", "write_report",
]
