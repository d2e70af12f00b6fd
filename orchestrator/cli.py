"""`synthscale` (also `python -m orchestrator`): the command line.

Subcommands: sweep, plan, power, show, grade, ui, gc, verify, config-docs, and the analysis
package's fit and fit-2d (dispatched from here, so that `analysis/` keeps
importing nothing from the orchestrator and `python -m analysis` keeps working).
Exit codes: 0 success, 1 a failed run (a stage raised, tracking broke),
2 bad input (config, override, input file); bad input is one line on stderr.
Each Makefile target calls exactly one of these commands.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

from orchestrator.config import ConfigError, config_help, load_config
from orchestrator.errors import one_line

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
PROG = "synthscale"

# analysis/cli.py's commands; their parsers are built only when one is asked for,
# since importing analysis (pandas, scipy, matplotlib) costs a second or more.
ANALYSIS_COMMANDS = {
    "fit": "fit 1-D scaling laws err(n) = E + A n^-alpha to a results CSV, with bootstrap CIs "
           "and efficiency multipliers (same as python -m analysis fit)",
    "fit-2d": "fit the 2-D law L(N, D) = E + A/N^alpha + B/D^beta (same as "
              "python -m analysis fit-2d)",
    "suggest": "the next cells (a seed, a size, more test problems) that narrow one "
               "multiplier's CI most per device-second, as overrides (python -m analysis "
               "suggest)",
}


POWER_HELP = ("can this grid tell k = 2 from k = 1, or an error difference d from 0, at the CI "
              "level? By simulated sweeps from a pilot's seed spread and baseline curve, "
              "through the analysis's own bootstrap: the smallest detectable k and d per size "
              "and data type")


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML, e.g. experiments/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="dotted overrides, e.g. grid.seeds=[0,1] train.sft.epochs=2")


def _command(sub, name: str, help_: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand whose own --help opens with the line `synthscale --help` shows for it."""
    return sub.add_parser(name, help=help_, description=help_, **kwargs)


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="scaling-law sweeps of synthetic "
                                     "data for LLM math reasoning: plan, run, track, fit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys = ("config keys (set in the YAML or override as key=value; a YAML may start from "
            "others with base: [files]):\n" + config_help())
    fmt = argparse.RawDescriptionHelpFormatter
    sweep = _command(sub, "sweep", "run a grid end to end (finished stages are reused)",
                     epilog=keys, formatter_class=fmt)
    _config_args(sweep)
    sweep.add_argument("--fail-fast", action="store_true",
                       help="stop at the first failed stage: cancel the stages queued or running "
                            "(finished ones stay cached) and exit 1; same as "
                            "cluster.fail_fast=true (default: independent cells go on)")
    plan = _command(sub, "plan", "print the stage plan without running it", epilog=keys,
                    formatter_class=fmt)
    _config_args(plan)
    plan.add_argument("--estimate", action="store_true",
                      help="instead of the plain stage table: for every stage, cached or new, "
                           "and each new one's predicted tokens, wall time (95%% interval) and "
                           "device time, from the throughput of finished stages of the same "
                           "kind; totals per data type and for the sweep")
    plan.add_argument("--store", action="append", metavar="PATH",
                      help="with --estimate: artifact store (or sweep folder) whose finished "
                           "stages give the throughput; repeatable (default: the config's own "
                           "store)")
    plan.add_argument("--price-per-device-hour", type=float, metavar="X",
                      help="with --estimate: also give money, X per device-hour (GPU, or CPU "
                           "for a CPU-only stage)")
    # Listed here for `--help`; main() builds its parser (which imports analysis) on demand.
    _command(sub, "power", POWER_HELP, add_help=False).add_argument("rest",
                                                                    nargs=argparse.REMAINDER)
    grade = _command(sub, "grade", "grade a JSONL of completions (fields: completion, answer)")
    grade.add_argument("file", help="JSONL, one completion per line, with its reference answer")
    grade.add_argument("--task", default="gsm8k", choices=["gsm8k", "math", "arith"],
                       help="answer format to extract and compare (default gsm8k)")
    grade.add_argument("--out", required=True, help="graded JSONL to write")
    grade.add_argument("--timeout", type=float, default=5.0, help="seconds per answer")
    ui = _command(sub, "ui", "MLflow UI on 127.0.0.1 over a sweep's store")
    _config_args(ui)
    ui.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    ui.add_argument("--host", default="127.0.0.1", help="bind address (keep loopback unless "
                                                          "you mean to expose it)")
    _command(sub, "config-docs", "print the configuration reference (docs/config.md)")
    show = _command(sub, "show", "print a few examples of a stage artifact (samples, pairs, "
                                 "rollouts with step values, predictions)")
    show.add_argument("artifact", help="an artifact folder or JSONL file, or an experiment YAML "
                                       "(with --stage)")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (YAML form)")
    show.add_argument("--stage", help="with a YAML: the stage, e.g. rollouts, step_pairs, sample")
    show.add_argument("--n", type=int, help="with a YAML: the size n")
    show.add_argument("--seed", type=int, help="with a YAML: the seed")
    show.add_argument("--data-type", help="with a YAML: the data type (for dpo, sft, evaluate)")
    show.add_argument("--problem", help="only records of this problem id")
    show.add_argument("-k", "--count", type=int, default=3, help="records to show (default 3)")
    gc = _command(sub, "gc", "delete stored artifacts that no kept config's plan uses (a dry run "
                             "unless --delete), and report the bytes freed")
    gc.add_argument("--keep", nargs="+", action="extend", required=True, metavar="CONFIG",
                    help="experiment YAMLs or sweep folders (runs/<name>, also a variant's) "
                         "whose artifacts stay; their stores are the ones cleaned")
    gc.add_argument("--delete", action="store_true",
                    help="delete what the dry run lists (default: only list it)")
    verify = _command(sub, "verify", "check an artifact store: every finished stage whole and "
                                     "as published; exit 1 if any is broken or foreign")
    verify.add_argument("store", help="an artifact store (cluster.artifacts) or a sweep folder "
                                      "(runs/<name>, whose artifacts/ is checked)")
    verify.add_argument("--fast", action="store_true",
                        help="compare file sizes only, not sha256 (what a sweep checks)")
    for name, help_ in ANALYSIS_COMMANDS.items():
        # Listed here for `--help`; main() hands these to run_analysis before parsing.
        _command(sub, name, help_, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def power_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{prog} power", description=POWER_HELP)
    _config_args(parser)
    parser.add_argument("--pilot", required=True, metavar="RESULTS.csv",
                        help="a pilot sweep's results.csv (two seeds or more per cell give the "
                             "seed spread; the baseline's sizes give its curve)")
    parser.add_argument("--per-problem", metavar="PER_PROBLEM.csv",
                        help="the pilot's per_problem.csv: its test-set size when the results "
                             "have no n_test column")
    for name in ("sims", "n_boot", "target", "seed", "seed_sd"):
        _power_option(parser, name)
    return parser


def _power_option(parser: argparse.ArgumentParser, name: str) -> None:
    """A flag of analysis.power.PowerOptions, its default and help from the dataclass."""
    import dataclasses

    from analysis.power import PowerOptions

    spec = {f.name: f for f in dataclasses.fields(PowerOptions)}[name]
    kind = {"sims": int, "n_boot": int, "seed": int}.get(name, float)
    parser.add_argument("--" + name.replace("_", "-"), type=kind, default=spec.default,
                        help=f"{spec.metadata['help']} (default {spec.default})")


def run_analysis(argv: list[str], prog: str = PROG) -> int:
    """`fit` / `fit-2d` / `suggest`: analysis/cli.py's own parsers and commands under this
    program name."""
    from analysis import cli as analysis_cli

    parser = argparse.ArgumentParser(prog=prog)
    # analysis/cli.py builds its subcommands onto any subparsers object; reusing those
    # builders keeps one definition of every flag, default and help text.
    analysis_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    return analysis_cli.run(parser.parse_args(argv))


def cmd_show(args) -> int:
    from pathlib import Path

    from orchestrator.show import find_artifact, show

    try:
        path, config = Path(args.artifact), None
        if path.suffix in (".yaml", ".yml"):
            if not args.stage:
                raise ValueError("with an experiment YAML, name the stage: --stage rollouts")
            config = load_config(args.artifact, args.overrides)
            path = find_artifact(config, args.artifact, args.stage, args.n, args.seed,
                                 args.data_type)
        elif not path.exists():
            raise ValueError(f"{path}: no such file or folder")
        show(path, args.count, sys.stdout, args.problem, config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


def cmd_config_docs(args) -> int:
    from orchestrator.config import config_reference

    sys.stdout.write(config_reference())
    return EXIT_OK


def cmd_sweep(args) -> int:
    from orchestrator.processes import exit_code, exit_on_signals
    from orchestrator.sweep import choose_output, print_report, run_sweep

    # A flag for what is also a config key: the override goes through the same validation.
    overrides = [*args.overrides, *(["cluster.fail_fast=true"] if args.fail_fast else [])]
    config, note = choose_output(load_config(args.config, overrides), args.overrides)
    if note:
        print(note, flush=True)
    try:
        # SIGTERM (SLURM, Kubernetes, a CI harness) and SIGHUP end the sweep like Ctrl-C: the
        # local Ray it started is shut down, its MLflow run ends KILLED, finished stages stay.
        with exit_on_signals():
            summary = run_sweep(config)
    except KeyboardInterrupt as interrupt:
        print("\ninterrupted: finished stages are kept; re-run the same command to resume",
              file=sys.stderr)
        return exit_code(interrupt)
    except OSError as exc:          # the output folder's disk full, a folder not writable
        from orchestrator.object_store import CorruptArtifact

        # A damaged published object: its message says what to delete; a re-run alone
        # would meet it again.
        resume = ("" if isinstance(exc, CorruptArtifact) else
                  f"; finished stages are kept in {config.artifacts_root}: re-run the same "
                  "command to resume")
        print(f"error: {one_line(exc)}{resume}", file=sys.stderr)
        return EXIT_FAILED
    print_report(summary, config)
    return EXIT_OK if summary.ok else EXIT_FAILED


def cmd_plan(args) -> int:
    from orchestrator.config import describe_changes
    from orchestrator.memory_plan import describe_memory
    from orchestrator.planning import describe_plan, expand_grid

    config = load_config(args.config, args.overrides)
    print(describe_changes(config))
    print()
    if args.estimate:
        print(_estimate(config, args.store or [config.artifacts_root],
                        args.price_per_device_hour))
        return EXIT_OK
    print(describe_plan(expand_grid(config)))
    print()
    print(describe_memory(config))
    return EXIT_OK


def _estimate(config, stores: list[str], price: float | None) -> str:
    from pathlib import Path

    from orchestrator.estimate import Estimator, describe_estimate, estimate_plan
    from orchestrator.planning import expand_grid
    from orchestrator.results import devices_reserved
    from orchestrator.store import open_store

    own = open_store(config.artifacts_root, config.cluster.artifact_cache)
    roots = []
    for store in stores:
        # The sweep's own store is measured by its local folder (an object store's cache).
        root = own.local_root if store == config.artifacts_root else Path(store)
        root = root / "artifacts" if (root / "artifacts").is_dir() else root
        if store != config.artifacts_root and not root.is_dir():
            raise ConfigError(f"--store {store}: no such artifact store (a folder of stage "
                              "folders, or a sweep folder with artifacts/)")
        roots.append(root)
    if price is not None and price < 0:
        raise ConfigError(f"--price-per-device-hour: expected a number >= 0, got {price}")
    plan = expand_grid(config)
    estimate = estimate_plan(plan, lambda spec: own.is_done(spec.stage, spec.key),
                             Estimator.from_stores(roots).with_prior(plan), devices_reserved)
    return describe_estimate(estimate, [str(r) for r in roots], price)


def cmd_power(args) -> int:
    from analysis import InputError, load_per_problem, load_results
    from analysis.power import Grid, PowerOptions, describe_power, power_table

    config = load_config(args.config, args.overrides)
    options = PowerOptions(sims=args.sims, n_boot=args.n_boot, level=config.analysis.level,
                           target=args.target, seed=args.seed, seed_sd=args.seed_sd)
    grid = Grid(tuple(config.grid.sizes), len(config.grid.seeds), config.task.n_test,
                tuple(config.grid.data_types), config.analysis.baseline)
    try:
        pilot = load_results(args.pilot)
        if "n_test" in pilot:
            pilot_n_test = float(pilot["n_test"].median())
        elif args.per_problem:
            pilot_n_test = float(load_per_problem(args.per_problem)["problem_id"].nunique())
        else:
            raise InputError(f"{args.pilot}: no n_test column; give --per-problem")
        table, warnings = power_table(pilot, grid, pilot_n_test, options)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(describe_power(table, grid, options, warnings))
    return EXIT_OK


def cmd_grade(args) -> int:
    from orchestrator.processes import exit_code, exit_on_signals
    from orchestrator.tasks.grading import grade_jsonl, stop_helper

    try:
        with exit_on_signals():
            summary = grade_jsonl(args.file, args.out, task=args.task, timeout_s=args.timeout)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as interrupt:          # Ctrl-C, SIGTERM, SIGHUP
        print(f"\ninterrupted: {args.out} not written", file=sys.stderr)
        return exit_code(interrupt)
    finally:
        stop_helper()
    print(f"graded {summary.n} completions: accuracy {summary.accuracy:.4f} "
          f"({summary.n_correct} correct, {summary.n_timed_out} timed out) -> {args.out}")
    return EXIT_OK


def cmd_ui(args) -> int:
    from orchestrator.processes import PortInUse, ensure_port_free, exit_code, run_in_group
    from orchestrator.sweep import choose_output, is_local_store

    # The folder the same `sweep` command wrote to (a variant's own, if it got one).
    config, _ = choose_output(load_config(args.config, args.overrides), args.overrides)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", config.tracking_uri,
               "--host", args.host, "--port", str(args.port)]
    if is_local_store(config.tracking_uri):
        command += ["--default-artifact-root", str((config.output_dir / "mlartifacts").resolve())]
    try:
        ensure_port_free(args.host, args.port)
    except PortInUse as exc:
        print(f"error: --port {args.port}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"MLflow UI for {config.tracking_uri_shown} on http://{args.host}:{args.port} (Ctrl-C stops)",
          flush=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    try:
        # MLflow's uvicorn workers and huey consumers live in the server's
        # process group, which ends with this command however it ends.
        return run_in_group(command, env=env, stdin=subprocess.DEVNULL)
    except KeyboardInterrupt as interrupt:          # Ctrl-C, SIGTERM, SIGHUP
        print(f"\nMLflow UI on port {args.port} stopped", file=sys.stderr)
        return exit_code(interrupt)


def cmd_gc(args) -> int:
    from orchestrator.gc import collect, delete, describe, human

    verdicts = collect(args.keep)
    print(describe(verdicts))
    unused = sum(v.unused_bytes for v in verdicts)
    if not args.delete:
        print(f"dry run: deleting would free {human(unused)}; add --delete to delete")
        return EXIT_OK
    print(f"deleted {sum(len(v.unused) for v in verdicts)} artifacts, freed {human(delete(verdicts))}")
    return EXIT_OK


def cmd_verify(args) -> int:
    from pathlib import Path

    from orchestrator.verify import verify_store

    store = args.store.removeprefix("file://")
    if "://" in store:
        raise ConfigError(f"{args.store}: verify checks folder stores only; an object store's "
                          "files are checked against DONE's sha256 as each node downloads them")
    root = Path(store)
    root = root / "artifacts" if (root / "artifacts").is_dir() else root
    if not root.is_dir():
        raise ConfigError(f"{args.store}: no such artifact store (a folder of stage folders)")
    checked, findings = verify_store(root, deep=not args.fast)
    for finding in findings:
        print(finding)
    broken = sum(f.damage for f in findings)
    print(f"{root}: {checked} finished stages checked, {broken} broken or foreign, "
          f"{len(findings) - broken} leftovers" + ("" if not broken else
          "; a sweep sets broken stages aside and computes them again"))
    return EXIT_FAILED if broken else EXIT_OK


COMMANDS = {"gc": cmd_gc, "verify": cmd_verify, "sweep": cmd_sweep, "plan": cmd_plan, "grade": cmd_grade, "ui": cmd_ui, "show": cmd_show,
            "config-docs": cmd_config_docs}


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ANALYSIS_COMMANDS:
        return run_analysis(argv, prog)
    if argv and argv[0] == "power":
        try:
            # Overrides may follow the flags (make power ... ARGS='grid.seeds=[0,1,2]').
            return cmd_power(power_parser(prog).parse_intermixed_args(argv[1:]))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    args = build_parser(prog).parse_args(argv)
    # MLflow's INFO lines (database migrations) would drown the progress display.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:         # output piped into `head` and closed early
        sys.stderr.close()
        return EXIT_OK
    except KeyboardInterrupt:
        print("\ninterrupted: finished stages are kept; re-run the same command to resume",
              file=sys.stderr)
        return 130
