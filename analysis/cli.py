"""`python -m analysis {fit,fit-2d}`: the command line over analysis.report.

Exit codes: 0 success (also when a sweep is too small to fit: warnings are
printed and whatever could be computed is written), 1 a failed run (an
unexpected error), 2 bad input (missing file or column, non-numeric values,
non-positive sizes, unknown baseline); bad input is one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from analysis.tables import COST_COLUMNS, InputError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _common(parser: argparse.ArgumentParser, n_boot: int) -> None:
    parser.add_argument("--out", required=True, help="folder for tables and plots")
    parser.add_argument("--n-boot", type=int, default=n_boot,
                        help=f"bootstrap resamples (default {n_boot}; 0 = no CIs)")
    parser.add_argument("--level", type=float, default=0.95, help="CI level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed")
    parser.add_argument("--no-plots", action="store_true", help="write tables only")


def _fit_parser(sub) -> None:
    fit = sub.add_parser("fit", help="1-D laws err(n) = E + A n^-alpha per group, multipliers",
                         description="Fit err(n) = E + A n^-alpha per group with bootstrap CIs "
                                     "and efficiency multipliers against a baseline group.")
    fit.add_argument("results", help="results CSV (the sweep's runs/<experiment>/results.csv)")
    fit.add_argument("--baseline", default="sft_teacher", help="baseline group (default "
                                                               "sft_teacher)")
    fit.add_argument("--group-col", default="data_type")
    fit.add_argument("--size-col", default="n")
    fit.add_argument("--error-col", default="test_error")
    fit.add_argument("--seed-col", default="seed", help="replicate column (optional in the CSV)")
    fit.add_argument("--per-problem", default=None,
                     help="per-problem CSV (default: per_problem.csv beside RESULTS if present)")
    fit.add_argument("--no-per-problem", action="store_true",
                     help="resample seeds only, even if per_problem.csv exists")
    fit.add_argument("--form", choices=["offset", "pure"], default="offset",
                     help="offset: E + A n^-alpha (default); pure: A n^-alpha")
    fit.add_argument("--huber-delta", type=float, default=0.1,
                     help="Huber delta on log residuals (default 0.1)")
    fit.add_argument("--cost-cols", default=None,
                     help="comma-separated cost columns to fit error against "
                          f"(default: those of {', '.join(COST_COLUMNS)} present; '' = none)")
    _common(fit, 1000)


def _fit_2d_parser(sub) -> None:
    fit2 = sub.add_parser("fit-2d", help="2-D law L(N, D) = E + A/N^alpha + B/D^beta",
                          description="Fit L(N, D) with Epoch AI's protocol (Besiroglu et al. "
                                      "2024). Defaults read their svg_extracted_data.csv.")
    fit2.add_argument("points", help="CSV with a model-size, a data-size (or FLOP) and a loss "
                                     "column")
    fit2.add_argument("--n-col", default="Model Size", help="model size column")
    fit2.add_argument("--d-col", default=None,
                      help="training tokens column (default: --flop-col / (6 N))")
    fit2.add_argument("--flop-col", default="Training FLOP", help="used when --d-col is absent")
    fit2.add_argument("--loss-col", default="loss")
    fit2.add_argument("--drop-highest-loss", type=int, default=0, metavar="K",
                      help="drop the K highest-loss points first (Epoch AI's headline fit: 5)")
    fit2.add_argument("--huber-delta", type=float, default=1e-3)
    _common(fit2, 1000)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_parser(sub)
    _fit_2d_parser(sub)
    return parser


def cmd_fit(args) -> int:
    from analysis.report import run_fit

    per_problem = False if args.no_per_problem else args.per_problem
    cost_cols = None if args.cost_cols is None else [c for c in args.cost_cols.split(",") if c]
    report = run_fit(args.results, args.out, args.baseline, group_col=args.group_col,
                     size_col=args.size_col, error_col=args.error_col, seed_col=args.seed_col,
                     per_problem=per_problem, plots=not args.no_plots, form=args.form,
                     n_boot=args.n_boot, level=args.level, seed=args.seed,
                     delta=args.huber_delta, cost_cols=cost_cols)
    print(report.text())
    print("\nwrote: " + ", ".join(str(p) for p in report.files))
    return EXIT_OK


def cmd_fit_2d(args) -> int:
    from analysis.report import run_fit_2d

    report = run_fit_2d(args.points, args.out, n_col=args.n_col, d_col=args.d_col,
                        flop_col=args.flop_col, loss_col=args.loss_col,
                        drop_highest=args.drop_highest_loss, n_boot=args.n_boot,
                        level=args.level, seed=args.seed, delta=args.huber_delta,
                        plots=not args.no_plots)
    print(report.text())
    print("\nwrote: " + ", ".join(str(p) for p in report.files))
    return EXIT_OK


def check_options(args) -> None:
    if not 0 < args.level < 1:
        raise InputError(f"--level: expected a number between 0 and 1, got {args.level:g}")
    if args.n_boot < 0:
        raise InputError(f"--n-boot: expected 0 or more resamples, got {args.n_boot}")
    if args.huber_delta <= 0:
        raise InputError(f"--huber-delta: expected a value > 0, got {args.huber_delta:g}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"fit": cmd_fit, "fit-2d": cmd_fit_2d}[args.command]
    try:
        check_options(args)
        return command(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
