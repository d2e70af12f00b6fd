"""A sweep end to end: plan, run on Ray, track in MLflow, write results, fit.

This is the driver side of `python -m orchestrator sweep`. It wires the pure
planner, the Ray runner, the MLflow tracker and the results tables together;
each of those stays ignorant of the others.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import sys
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

from orchestrator.compose import differences
from orchestrator.config import Config, config_dict
from orchestrator.config_schema import ConfigError
from orchestrator.contract import Files
from orchestrator.errors import one_line
from orchestrator.estimate import Estimator
from orchestrator.files import write_atomically
from orchestrator.live import LiveCurves, fit_options
from orchestrator.oracle_checks import check_credit, log_tables
from orchestrator.planning import Plan, StageSpec, describe_plan, expand_grid
from orchestrator.processes import end_group
from orchestrator.progress import Progress
from orchestrator.provenance import library_differences, library_versions
from orchestrator.reaper import start as start_reaper
from orchestrator.results import (
    chain_cost,
    devices_reserved,
    per_problem_table,
    results_table,
    summary_table,
    write_atomic_csv,
)
from orchestrator.runner import (
    Events,
    cluster_cpus,
    concurrent_stages,
    ray_session,
    run_plan,
    unplaceable,
)
from orchestrator.store import DONE, ArtifactStore, Outcome, folder_bytes, free_bytes, open_store
from orchestrator.verify import check_cached

STAGE_ARTIFACTS = {"evaluate": [Files.PREDICTIONS]}   # files logged with a stage's MLflow run
FIT_TABLES = ("fits", "multipliers", "paired")   # analysis CSVs logged as MLflow tables


@dataclass
class SweepSummary:
    results_csv: Path
    per_problem_csv: Path
    tracking_uri: str
    failed: dict[str, str] = field(default_factory=dict)      # stage id -> one-line error
    skipped: dict[str, str] = field(default_factory=dict)
    cancelled: dict[str, str] = field(default_factory=dict)   # key -> the failure (--fail-fast)
    tracking_errors: list[str] = field(default_factory=list)
    retried: dict[str, int] = field(default_factory=dict)   # stage id -> attempts it took
    analysis_files: list[Path] = field(default_factory=list)
    analysis_text: str = ""
    first_failure: str = ""      # the id of the first stage that failed

    @property
    def ok(self) -> bool:
        return not (self.failed or self.skipped or self.cancelled or self.tracking_errors)


def sweep_id(config: Config, plan: Plan) -> str:
    text = json.dumps([config.experiment.name, sorted(s.key for s in plan.specs)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


class SweepEvents(Events):
    """Fans runner events out to the progress display, MLflow and the results files."""

    def __init__(self, config: Config, plan: Plan, progress: Progress, tracker, stream):
        self.config, self.plan, self.progress, self.tracker = config, plan, progress, tracker
        self.stream = stream
        self.outcomes: dict[str, Outcome] = {}
        self.tracking_errors: list[str] = []
        self.retried: dict[str, int] = {}
        self.not_run = {"failed": 0, "skipped": 0, "cancelled": 0}   # stage counts, for MLflow
        self.first_failure = ""         # the id of the stage that stopped a --fail-fast sweep
        self.live = LiveCurves(config, tracker, stream)   # fits refreshed as cells finish

    def submitted(self, spec: StageSpec) -> None:
        self.progress.submitted(spec)

    def finished(self, spec: StageSpec, outcome: Outcome) -> None:
        self.outcomes[spec.key] = outcome
        if outcome.attempt > 1:
            self.retried[spec.id] = outcome.attempt
            self.stream.write(f"retried: {spec.id} finished on attempt {outcome.attempt} "
                              "(an earlier worker died mid-stage; its partial output was dropped)\n")
        self.progress.finished(spec, outcome)
        self._track(spec, outcome)
        # Fresh results reach the tables as they come (a long sweep is readable while it
        # runs); cached ones wait for the one write at the end, or a resume would re-read
        # every evaluation once per evaluation.
        if spec.stage == "evaluate" and not outcome.cached:
            try:
                results_csv, _ = write_tables(self.config, self.plan, self.outcomes)
            except (OSError, ValueError) as exc:
                self.stream.write(f"warning: could not update the results tables ({exc}); "
                                  "they are written again at the end\n")
                return
            if not self.tracking_errors:
                cells = sum(c.eval_key in self.outcomes for c in self.plan.cells)
                self.live.cell_finished(results_csv, cells)

    def failed(self, spec: StageSpec, error: str) -> None:
        self.not_run["failed"] += 1
        self.first_failure = self.first_failure or spec.id
        self.progress.failed(spec, error)
        cells = [f"{c.data_type},n={c.n},seed={c.seed}" for c in self.plan.cells
                 if spec.key in c.chain]
        if self.tracker is not None:
            self._guarded(lambda: self.tracker.log_failure(spec, error, cells))

    def skipped(self, spec: StageSpec, upstream: StageSpec) -> None:
        self.not_run["skipped"] += 1
        self.progress.skipped(spec, upstream)

    def cancelled(self, spec: StageSpec, failure: StageSpec) -> None:
        self.not_run["cancelled"] += 1
        self.progress.cancelled(spec, failure)

    def tick(self) -> None:
        self.progress.tick()

    def _track(self, spec: StageSpec, outcome: Outcome) -> None:
        if self.tracker is None or self.tracking_errors:
            return
        extra = {"device_seconds": outcome.result.wall_seconds * devices_reserved(spec),
                 **self._chain_cost(spec)}
        folder = Path(outcome.artifact_dir)
        files = [folder / name for name in STAGE_ARTIFACTS.get(spec.stage, [])
                 if self.config.tracking.log_artifacts and (folder / name).exists()]
        inputs = {name: self.outcomes[key].artifact_dir for name, key in spec.inputs
                  if key in self.outcomes}
        self._guarded(lambda: self.tracker.log_stage(spec, outcome, extra, files, inputs))

    def _guarded(self, log) -> None:
        """Call `log` (MLflow logging) unless tracking already broke; an error stops the
        logging, never the sweep."""
        if self.tracking_errors:
            return
        try:
            log()
        except Exception as exc:  # noqa: BLE001 - any tracking failure must not lose compute
            self.tracking_errors.append(one_line(exc))
            self.stream.write(f"warning: MLflow logging stopped ({self.tracking_errors[0]}); "
                              "results.csv is still written, and a re-run logs what is missing\n")

    def _chain_cost(self, spec: StageSpec) -> dict[str, float]:
        """An evaluation's cell cost (as in results.csv), as chain_* metrics, so the
        analysis can fit error against compute from MLflow alone."""
        if spec.stage != "evaluate":
            return {}
        cell = next((c for c in self.plan.cells if c.eval_key == spec.key), None)
        if cell is None or any(k not in self.outcomes for k in cell.chain):
            return {}
        cost = chain_cost(self.plan, cell, self.outcomes, self.config.pool_size)
        return {f"chain_{name}": value for name, value in cost.items()}


def write_tables(config: Config, plan: Plan, outcomes: dict[str, Outcome]) -> tuple[Path, Path]:
    out = config.output_dir
    results = results_table(plan, outcomes, config.experiment.name, config.model.base,
                            config.pool_size)
    write_atomic_csv(results, out / "results.csv")
    write_atomic_csv(per_problem_table(plan, outcomes, config.experiment.name),
                     out / "per_problem.csv")
    return out / "results.csv", out / "per_problem.csv"


def _open_tracker(config: Config, plan: Plan):
    from orchestrator.tracking import Tracker

    local = is_local_store(config.tracking_uri)
    try:
        tracker = Tracker(config.tracking_uri, config.mlflow_experiment,
                          config.tracking.artifact_location
                          or (config.output_dir / "mlartifacts" if local else None))
        tracker.start_sweep(sweep_id(config, plan), config.experiment.name, config_dict(config),
                            describe_plan(plan))
    except Exception as exc:
        raise ConfigError(f"tracking.uri={config.tracking_uri_shown}: cannot open the MLflow store "
                          f"({one_line(exc)})") from exc
    return tracker


# ---------------------------------------------------------------- variants
# A folder's results.csv belongs to the config in its config.resolved.yaml. These keys say
# where a sweep runs and logs, not what it computes: changing them is the same sweep.
PLACEMENT = ("experiment.", "cluster.", "tracking.")


def _computed(key: str) -> bool:
    return not any(key == p or key.startswith(p) for p in PLACEMENT)


def owner_differences(config: Config, folder: Path) -> list[tuple[str, object, object]]:
    """How `config` differs from the config whose results.csv is in `folder` (nothing when
    the folder has no results). Keys only one side knows (a knob added since) are skipped."""
    stored_file = folder / "config.resolved.yaml"
    if not (folder / "results.csv").exists() or not stored_file.exists():
        return []
    try:
        stored = yaml.safe_load(stored_file.read_text()) or {}
        if not isinstance(stored, dict):
            raise ValueError("not a mapping of sections")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{stored_file}: cannot read the config that produced "
                          f"{folder / 'results.csv'} ({one_line(exc)})") from None
    return [(key, old, new) for key, old, new in differences(stored, config_dict(config))
            if _computed(key) and old is not None and new is not None]


def variant_name(overrides: Sequence[str], changed: Sequence[str]) -> str:
    """A readable folder suffix, as Hydra's override_dirname: the overrides of computed keys
    (`grid.sizes=[100,200]` -> `grid.sizes=100+200`), sorted, comma-joined; with none, the
    keys that differ."""
    named = sorted(text.strip() for text in overrides
                   if "=" in text and _computed(text.split("=", 1)[0].strip()))
    parts = named or sorted(changed)
    cleaned = [re.sub(r"[^A-Za-z0-9._=+-]", "_", re.sub(r"[\[\]\s'\"]", "", part).replace(",", "+"))
               for part in parts]
    return ",".join(cleaned)[:200]


def _describe_differences(changed: list[tuple[str, object, object]]) -> str:
    shown = [f"{key}: {json.dumps(old)} there, {json.dumps(new)} here" for key, old, new in
             changed[:3]]
    return "; ".join(shown) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")


def choose_output(config: Config, overrides: Sequence[str] = ()) -> tuple[Config, str]:
    """The config a sweep runs: unchanged when its folder holds no results of another config;
    else writing to a variant folder beside it (the same artifact store, so every finished
    stage is reused), with a line saying so. Never returns a config whose folder holds
    another config's results: that is a ConfigError."""
    changed = owner_differences(config, config.output_dir)
    if not changed:
        return config, ""
    folder = config.output_dir
    variant = folder.with_name(f"{folder.name},{variant_name(overrides, [k for k, _, _ in changed])}")
    moved = replace(config, experiment=replace(config.experiment, output_dir=str(variant)),
                    cluster=replace(config.cluster, artifacts=config.artifacts_root))
    refuse_to_replace(moved, also=True)
    return moved, (f"{folder / 'results.csv'} came from another config "
                   f"({_describe_differences(changed)}): this variant writes to {variant}/")


def refuse_to_replace(config: Config, also: bool = False) -> None:
    """The last guard before a sweep writes: another config's tables are never replaced
    (`also`: the folder is already a variant of a third config)."""
    changed = owner_differences(config, config.output_dir)
    if changed:
        folder = config.output_dir
        raise ConfigError(f"{folder / 'results.csv'} came from another config{' too' if also else ''}"
                          f" ({_describe_differences(changed)}); set experiment.name or "
                          f"experiment.output_dir to keep both, or delete "
                          f"{folder if also else 'it'} to replace it")


def run_sweep(config: Config, stream=None) -> SweepSummary:
    """Run the whole grid; safe to interrupt and re-run (finished stages are skipped).
    `choose_output` first picks a folder that holds no other config's results."""
    # Ends last, once the sweep has set its runs' statuses, however it ends: the reaper.
    with ExitStack() as at_end:
        return _sweep(config, stream or sys.stdout, at_end)


def _sweep(config: Config, stream, at_end: ExitStack) -> SweepSummary:
    refuse_to_replace(config)
    plan = expand_grid(config)
    store = open_store(config.artifacts_root, config.cluster.artifact_cache)
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    resolved = yaml.safe_dump(config_dict(config), sort_keys=False)
    write_atomically(out / "config.resolved.yaml", lambda tmp: tmp.write_text(resolved))
    stream.write(f"sweep {config.experiment.name}: {len(plan.cells)} grid cells, "
                 f"{len(plan.specs)} stages; artifacts in {config.artifacts_root}\n")
    check_cache_provenance(config, plan, stream)
    if isinstance(store, ArtifactStore):
        check_cached(store.root, plan.specs, stream)   # never trust a broken cache
        check_free_space(store.root, plan.specs, stream)
    # (An object store's files are checked against their sha256 as they are downloaded.)
    # Nothing to do costs nothing: a fully cached sweep starts no Ray (seconds, not 20 s).
    all_cached = store.all_done(plan.specs)
    with nullcontext("not started") if all_cached else ray_session(config) as where:
        if all_cached:
            stream.write("ray: not started, every stage is cached\n")
        else:
            stream.write(f"ray: {where}, {cluster_cpus():g} CPUs\n")
            _check_placeable(plan, where, stream)
        tracker = _open_tracker(config, plan)
        # kill -9 runs no `finally`: the reaper then ends the runs this process left RUNNING.
        at_end.callback(end_group, start_reaper(tracker.uri, tracker.experiment_id,
                                                tracker.parent_id, out / "reaper.log"))
        # The ETA's cost model: throughput measured by the store's finished stages, and
        # for kinds it never ran the shipped prior (the embedded demo's, on its model).
        progress = Progress(plan, 1 if all_cached else concurrent_stages(plan), stream,
                            Estimator.from_stores([store.local_root]).with_prior(plan))
        events = SweepEvents(config, plan, progress, tracker, stream)
        try:
            report = run_plan(plan, config, events)
        except BaseException:
            _end_tracking(tracker, events, "KILLED")
            raise
    status = "FAILED"       # unless everything below finishes: never leave the run RUNNING
    try:
        results_csv, per_problem_csv = write_tables(config, plan, report.outcomes)
        stream.write(progress.summary() + "\n")
        failed = {plan.get(key).id: error for key, error in report.failed.items()}
        summary = SweepSummary(results_csv, per_problem_csv, config.tracking_uri_shown,
                               failed, report.skipped, report.cancelled,
                               events.tracking_errors, events.retried)
        summary.first_failure = events.first_failure
        check_credit(config, plan, report.outcomes, tracker, events.tracking_errors)
        if config.analysis.enabled:
            summary.analysis_files, summary.analysis_text = analyse(config, results_csv, tracker,
                                                                    events)
        if not (report.failed or report.skipped or report.cancelled):
            status = "FINISHED"
    finally:
        _end_tracking(tracker, events, status)
    return summary


def check_cache_provenance(config: Config, plan: Plan, stream) -> None:
    """Cached artifacts whose spec.json names other library versions than this sweep's:
    reused with one warning per stage kind, or, with cluster.strict_cache, removed so
    that this sweep recomputes them. (The cache key covers configs and code, not the
    environment: a torch upgrade keeps every key.)"""
    store = open_store(config.artifacts_root, config.cluster.artifact_cache)
    here = library_versions()
    stale: dict[str, list[StageSpec]] = {}
    made_with: dict[str, list[str]] = {}
    for spec in plan.specs:
        if not store.is_done(spec.stage, spec.key):
            continue
        found = library_differences(store.spec(spec.stage, spec.key).get("provenance"), here)
        if found:
            stale.setdefault(spec.stage, []).append(spec)
            made_with.setdefault(spec.stage, found)
    for stage, specs in stale.items():
        what = f"{len(specs)} cached {stage} stage(s) made with {', '.join(made_with[stage])}"
        if config.cluster.strict_cache:
            for spec in specs:
                store.discard(spec.stage, spec.key)
            stream.write(f"cluster.strict_cache: recomputing {what}\n")
        else:
            stream.write(f"warning: reusing {what}; cluster.strict_cache=true recomputes them\n")


LOW_FREE_BYTES = 1 << 30     # below this, a sweep's store gets a warning even without history


def check_free_space(store_root: Path, specs, stream) -> None:
    """Warn before starting when the store's disk looks too small for the stages still to run:
    each is guessed as large as this store's finished stages of its kind (or the median of all
    of them). A guess, so a warning; a write that does fail names the store and the bytes."""
    store = ArtifactStore(store_root)
    pending = [s for s in specs if not store.is_done(s.stage, s.key)]
    if not pending:
        return
    sizes: dict[str, list[int]] = {}
    for folder in store.root.glob("*/*") if store.root.exists() else []:
        if folder.is_dir() and (folder / DONE).exists():
            sizes.setdefault(folder.parent.name, []).append(folder_bytes(folder))
    every = [size for group in sizes.values() for size in group]
    guess = {stage: statistics.median(group) for stage, group in sizes.items()}
    need = sum(guess.get(s.stage, statistics.median(every) if every else 0) for s in pending)
    free = free_bytes(store.root)
    if need > free:
        stream.write(f"warning: {store.root} has {free:,} bytes free; the {len(pending)} stages "
                     f"to run need about {int(need):,} (sizes of its finished stages)\n")
    elif free < LOW_FREE_BYTES:
        stream.write(f"warning: {store.root} has only {free:,} bytes free\n")


def _check_placeable(plan: Plan, where: str, stream) -> None:
    """A stage no node can ever hold is an error on a local Ray and a warning on a cluster
    (whose autoscaler may still add such a node)."""
    problems = unplaceable(plan)
    if problems and where == "local":
        raise ConfigError(f"{problems[0]}; point RAY_ADDRESS at a cluster that has such a "
                          "node, or lower the request")
    for problem in problems:
        stream.write(f"warning: {problem}; its stages wait until the cluster has one\n")


def analyse(config: Config, results_csv: Path, tracker, events: SweepEvents) -> tuple[list[Path], str]:
    """Fit the scaling laws on the fresh results and log them to the sweep's run."""
    from analysis import InputError, run_fit

    options = fit_options(config, config.analysis.n_boot)
    try:
        report = run_fit(results_csv, config.output_dir / "analysis", options)
    except InputError as exc:
        return [], f"analysis skipped: {exc}"
    if not events.tracking_errors:
        try:
            if config.tracking.log_artifacts:
                tracker.log_sweep_files(report.files, "analysis")
            # step: the finished cells, as the live fits' (orchestrator.live): one curve
            cells = sum(c.eval_key in events.outcomes for c in events.plan.cells)
            tracker.log_sweep_metrics(report.metrics(), step=cells)
            tracker.log_sweep_tables({p.stem: p for p in report.files
                                      if p.suffix == ".csv" and p.stem.startswith(FIT_TABLES)})
        except Exception as exc:  # noqa: BLE001 - the fit is on disk either way
            events.tracking_errors.append(one_line(exc))
    return report.files, report.text()


def _end_tracking(tracker, events: SweepEvents, status: str) -> None:
    results_csv = events.config.output_dir / "results.csv"
    if status != "KILLED" and results_csv.exists():
        # The sweep's own table: its run is complete even where its stage runs were
        # logged under an earlier sweep's run (one that this sweep extends).
        log_tables(tracker, events.tracking_errors, {"results": results_csv})
    try:
        tracker.end_sweep(status)
        tracker.log_sweep_outcome(events.not_run)
    except Exception as exc:  # noqa: BLE001 - the sweep's own outcome matters more
        events.tracking_errors.append(one_line(exc))


def print_report(summary: SweepSummary, config: Config, stream=None) -> None:
    import pandas as pd

    stream = stream or sys.stdout
    results = pd.read_csv(summary.results_csv)
    stream.write("\nTest error by data type and size (mean over seeds):\n")
    stream.write(summary_table(results) + "\n\n")
    if summary.analysis_text:
        stream.write(summary.analysis_text.rstrip() + "\n\n")
    stream.write(f"results:     {summary.results_csv}\n")
    stream.write(f"per problem: {summary.per_problem_csv}\n")
    stream.write(f"MLflow:      {summary.tracking_uri}  (make ui CONFIG=... to browse)\n")
    if summary.analysis_files:
        stream.write(f"analysis:    {summary.analysis_files[0].parent}/ "
                     f"({', '.join(p.name for p in summary.analysis_files)})\n")
    for stage_id, error in summary.failed.items():
        stream.write(f"FAILED {stage_id}: {error}\n")
    if summary.skipped:
        stream.write(f"{len(summary.skipped)} stages skipped because an upstream stage failed\n")
    if summary.cancelled:
        count = len(summary.cancelled)
        stream.write(f"cancelled: {count} stage{'s' * (count != 1)} (--fail-fast after FAILED "
                     f"{summary.first_failure})\n")
    for stage_id, attempt in summary.retried.items():
        stream.write(f"retried:     {stage_id} (attempt {attempt}; a worker died)\n")
    for error in summary.tracking_errors:
        stream.write(f"MLflow error: {error}\n")
