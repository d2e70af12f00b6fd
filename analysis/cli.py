"""`python -m analysis {fit,fit-2d,suggest}`: the command line over analysis.report
(and analysis.suggest).

Exit codes: 0 success (also when a sweep is too small to fit: warnings are
printed and whatever could be computed is written), 1 a failed run (an
unexpected error: Python's own status for an uncaught exception), 2 bad input
(missing file or column, non-numeric values, non-positive sizes, unknown
baseline); bad input is one line on stderr. Flags and their defaults are the
fields of analysis.options.FitOptions / Fit2DOptions.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from analysis.options import Fit2DOptions, FitOptions
from analysis.power_law import FORMS
from analysis.report import run_fit, run_fit_2d
from analysis.tables import Columns, InputError, PointColumns

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _field(owner: type, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(owner)}[name]


def _option(parser, flag: str, owner: type, name: str, **kwargs) -> None:
    """A flag whose default and help are those of the field `name` of dataclass `owner`."""
    spec = _field(owner, name)
    shown = "none" if spec.default is None else spec.default
    parser.add_argument(flag, default=spec.default,
                        help=f"{spec.metadata['help']} (default {shown})", **kwargs)


def _common(parser: argparse.ArgumentParser, options: type) -> None:
    parser.add_argument("--out", required=True, help="folder for tables and plots")
    _option(parser, "--huber-delta", options, "delta", type=float)
    _option(parser, "--n-boot", options, "n_boot", type=int)
    _option(parser, "--level", options, "level", type=float)
    _option(parser, "--seed", options, "seed", type=int)
    parser.add_argument("--no-plots", action="store_true", help="write tables only")


def _fit_parser(sub) -> None:
    fit = sub.add_parser("fit", help="1-D laws err(n) = E + A n^-alpha per group, multipliers",
                         description="Fit err(n) = E + A n^-alpha per group with bootstrap CIs "
                                     "and efficiency multipliers against a baseline group.")
    fit.add_argument("results", nargs="+",
                     help="results CSV (the sweep's runs/<experiment>/results.csv); several: "
                          "variants overlaid, groups named <folder>:<data_type>, multipliers "
                          "against the first one's baseline")
    _option(fit, "--baseline", FitOptions, "baseline")
    for name in ("group", "size", "error", "seed"):
        _option(fit, f"--{name}-col", Columns, name)
    fit.add_argument("--per-problem", default=None,
                     help="per-problem CSV (default: per_problem.csv beside RESULTS if present)")
    fit.add_argument("--no-per-problem", action="store_true",
                     help="resample seeds only, even if per_problem.csv exists")
    _option(fit, "--form", FitOptions, "form", choices=FORMS)
    fit.add_argument("--cost-cols", default=None,
                     help=f"{_field(FitOptions, 'cost_cols').metadata['help']}; "
                          "comma-separated, '' = none")
    _common(fit, FitOptions)


def _fit_2d_parser(sub) -> None:
    fit2 = sub.add_parser("fit-2d", help="2-D law L(N, D) = E + A/N^alpha + B/D^beta",
                          description="Fit L(N, D) with Epoch AI's protocol (Besiroglu et al. "
                                      "2024). Defaults read their svg_extracted_data.csv.")
    fit2.add_argument("points", help="CSV with a model-size, a data-size (or FLOP) and a loss "
                                     "column")
    for name in ("n", "d", "flop", "loss"):
        _option(fit2, f"--{name}-col", PointColumns, name)
    _option(fit2, "--drop-highest-loss", Fit2DOptions, "drop_highest", type=int, metavar="K")
    _common(fit2, Fit2DOptions)


def _suggest_parser(sub) -> None:
    sug = sub.add_parser("suggest", help="the next cells that shrink a multiplier's CI most per "
                                         "device-second",
                         description="Rank candidate additions to the grid (a seed, a larger or "
                                     "smaller size, more test problems) by how much they are "
                                     "expected to narrow the CI of one data type's multiplier, "
                                     "per added device-second, by simulated sweeps from RESULTS.")
    sug.add_argument("results", help="a sweep's results.csv (with device_seconds), the pilot")
    sug.add_argument("--group", required=True, help="the data type whose multiplier matters")
    sug.add_argument("--baseline", default="sft_teacher", help="default sft_teacher")
    sug.add_argument("--at-n", type=float, default=None,
                     help="the size whose k matters (default: the largest where the pilot's "
                          "own k CI is bounded)")
    sug.add_argument("--n-test", type=int, default=None,
                     help="test problems per cell (default: the results' n_test column)")
    sug.add_argument("--sims", type=int, default=16, help="simulated sweeps per design "
                                                         "(default 16)")
    sug.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples per "
                                                            "simulated sweep (default 100)")
    sug.add_argument("--level", type=float, default=0.95, help="CI level (default 0.95)")
    sug.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")


def cmd_suggest(args) -> int:
    from analysis.suggest import describe_suggestions, suggest
    from analysis.tables import load_results

    if args.sims < 2 or args.n_boot < 10 or not 0 < args.level < 1:
        raise InputError("suggest: expected --sims >= 2, --n-boot >= 10 and 0 < --level < 1")
    frame = load_results(args.results)
    n_test = args.n_test
    if n_test is None:
        if "n_test" not in frame.columns:
            raise InputError(f"{args.results}: no n_test column; give --n-test")
        n_test = int(frame["n_test"].max())
    table, head, warnings = suggest(frame, args.baseline, args.group, n_test, at_n=args.at_n,
                                    sims=args.sims, n_boot=args.n_boot, level=args.level,
                                    seed=args.seed)
    print(describe_suggestions(table, head, warnings))
    return EXIT_OK


def add_commands(sub) -> None:
    """fit, fit-2d and suggest onto any subparsers object (also `synthscale`'s)."""
    _fit_parser(sub)
    _fit_2d_parser(sub)
    _suggest_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n")[0])
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def fit_options(args: argparse.Namespace) -> FitOptions:
    """The FitOptions the `fit` command's arguments ask for."""
    cost_cols = None if args.cost_cols is None else tuple(c for c in args.cost_cols.split(",")
                                                          if c)
    columns = Columns(group=args.group_col, size=args.size_col, error=args.error_col,
                      seed=args.seed_col)
    return FitOptions(baseline=args.baseline, columns=columns, form=args.form,
                      delta=args.huber_delta, n_boot=args.n_boot, level=args.level,
                      seed=args.seed, cost_cols=cost_cols)


def fit_2d_options(args: argparse.Namespace) -> Fit2DOptions:
    """The Fit2DOptions the `fit-2d` command's arguments ask for."""
    columns = PointColumns(n=args.n_col, d=args.d_col, flop=args.flop_col, loss=args.loss_col)
    return Fit2DOptions(columns=columns, drop_highest=args.drop_highest_loss,
                        delta=args.huber_delta, n_boot=args.n_boot, level=args.level,
                        seed=args.seed)


def cmd_fit(args) -> int:
    per_problem = False if args.no_per_problem else args.per_problem
    report = run_fit(args.results, args.out, fit_options(args), per_problem=per_problem,
                     plots=not args.no_plots)
    return _print(report)


def cmd_fit_2d(args) -> int:
    return _print(run_fit_2d(args.points, args.out, fit_2d_options(args),
                             plots=not args.no_plots))


def _print(report) -> int:
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


def run(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input is one line on stderr and exit 2."""
    command = {"fit": cmd_fit, "fit-2d": cmd_fit_2d, "suggest": cmd_suggest}[args.command]
    try:
        if args.command != "suggest":        # suggest checks its own flags
            check_options(args)
        return command(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
