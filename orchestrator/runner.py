"""The Ray runner: the only module that imports `ray`.

Every stage of a plan becomes one Ray task with the stage's resources;
upstream results pass as ObjectRefs, so Ray schedules the DAG and starts a
stage as soon as its inputs exist. A stage that asks for a GPU runs in a
worker process of its own that exits when the stage ends (Ray only does that
for `num_gpus` given in the decorator, not in `.options()`, so GPU stages go
through a second remote function declared with `max_calls=1`): a reused
worker would keep the CUDA device it first saw and the memory its caching
allocator reserved, and the next stage would land on the wrong GPU or fail
vLLM's free-memory check. Finished stages (a `DONE` artifact in the
store) are not submitted at all. A worker or node that dies has its task
retried (`cluster.max_retries`); a stage that raises fails alone, and its
dependents are reported as skipped while independent branches go on; with
`cluster.fail_fast`, the first failure cancels every stage still queued or
running instead (`ray.cancel(force=True)` kills a running one's worker: its
temporary folder is a dead attempt that the next sweep's `clean_stale` removes,
and it is never published).

Swapping the executor (local process, another scheduler) means replacing this
one file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.config import Config
from orchestrator.config_schema import ConfigError
from orchestrator.errors import one_line
from orchestrator.planning import Plan, StageSpec
from orchestrator.stages import STAGES
from orchestrator.store import ArtifactStore, Outcome, open_store, run_cached

# Set for every Ray worker: stage threads, and no phone-home from libraries.
WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass
class RunReport:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)    # key -> one-line error
    skipped: dict[str, str] = field(default_factory=dict)   # key -> the failed upstream key
    cancelled: dict[str, str] = field(default_factory=dict)  # key -> the failure that stopped it


class Events:
    """What the runner tells its caller (progress display, tracking)."""

    def submitted(self, spec: StageSpec) -> None: ...
    def finished(self, spec: StageSpec, outcome: Outcome) -> None: ...
    def failed(self, spec: StageSpec, error: str) -> None: ...
    def skipped(self, spec: StageSpec, upstream: StageSpec) -> None: ...
    def cancelled(self, spec: StageSpec, failure: StageSpec) -> None: ...
    def tick(self) -> None: ...


@contextmanager
def ray_session(config: Config) -> Iterator[str]:
    """Ray for the length of a block: connected to the configured cluster, or a local Ray
    started here; yields where. Ray is shut down when the block ends, however it ends."""
    where = start_ray(config)
    try:
        yield where
    finally:
        stop_ray()


def start_ray(config: Config) -> str:
    """Connect to the configured cluster, or start a local Ray; returns where."""
    with _caller_signal_handlers():
        return _init_ray(config)


@contextmanager
def _caller_signal_handlers() -> Iterator[None]:
    """ray.init replaces the driver's SIGTERM handler (with sys.exit, and its core worker
    with one that aborts the process): put the caller's back, so a sweep that turns SIGTERM
    into a clean stop (cli.cmd_sweep) still gets to shut its local Ray down."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:
                signal.signal(signum, handler)


def _init_ray(config: Config) -> str:
    # Ray 2.60 binds GCS, raylet and worker gRPC to all interfaces unless the node IP is
    # loopback, and ray.init turns a loopback _node_ip_address back into the host's IP unless
    # this (Linux-misnamed) switch is off, read when ray is imported: a local Ray stays on
    # 127.0.0.1 (tests/faults/test_exposure.py). A cluster keeps Ray's default.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1" if config.cluster.address or os.environ.get("RAY_ADDRESS") else "0")
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    address = config.cluster.address or os.environ.get("RAY_ADDRESS", "")
    env = dict(WORKER_ENV)
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=False,
                     ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = "cluster.address" if config.cluster.address else "RAY_ADDRESS"
            raise ConfigError(f"{where}={address}: cannot connect to a Ray cluster "
                              f"({one_line(exc)})") from exc
        return address
    # A purely local Ray: no auth token under $HOME, dashboard only on loopback.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=config.cluster.num_cpus or None, num_gpus=config.cluster.num_gpus or None,
             include_dashboard=False,
             dashboard_host="127.0.0.1", runtime_env={"env_vars": env}, log_to_driver=False,
             ignore_reinit_error=True, configure_logging=True, logging_level="warning")
    return "local"


def unplaceable(plan: Plan) -> list[str]:
    """One line per stage resource group that no node of the connected Ray cluster can
    ever hold (Ray would keep such tasks pending forever, silently)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    biggest = (f"largest node: {max((n.get('CPU', 0) for n in nodes), default=0):g} CPUs, "
               f"{max((n.get('GPU', 0) for n in nodes), default=0):g} GPUs")
    problems: dict[str, str] = {}
    for spec in plan.specs:
        res = spec.resources
        need = {"CPU": res.num_cpus, "GPU": res.num_gpus, "memory": res.memory_bytes}
        if res.custom_resource:
            need[res.custom_resource] = res.custom_amount
        if any(all(node.get(k, 0) >= v for k, v in need.items() if v) for node in nodes):
            continue
        group = STAGES[spec.stage].resource_group
        problems.setdefault(group, f"cluster.resources.{group}: {spec.id} asks for "
                                   f"{res.num_cpus:g} CPUs, {res.num_gpus:g} GPUs"
                                   f"{f', {res.memory_gb:g} GB' if res.memory_gb else ''}"
                                   f"{_custom(res)}, "
                                   f"which no node has ({biggest})")
    return list(problems.values())


def _custom(res) -> str:
    return f", {res.custom_amount:g} {res.custom_resource!r}" if res.custom_resource else ""


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))


def concurrent_stages(plan: Plan) -> int:
    """How many typical stages the cluster runs at once (for the ETA): CPUs and, when
    stages ask for them, GPUs are the limits."""
    import ray

    slots = cluster_cpus() / statistics.median(s.resources.num_cpus or 1 for s in plan.specs)
    gpus = statistics.median(s.resources.num_gpus for s in plan.specs)
    if gpus > 0:
        slots = min(slots, ray.cluster_resources().get("GPU", 0.0) / gpus)
    return max(1, int(slots))


def _execute(spec: StageSpec, store_root: str, upstream: tuple[Outcome, ...],
             cache: str = "") -> Outcome:
    # A stage computes with as many threads as CPUs it reserved, so stages
    # running side by side do not oversubscribe the cores.
    os.environ["SYNTHSCALE_TORCH_THREADS"] = str(max(1, int(spec.resources.num_cpus)))
    # A data-parallel stage's Ray Train workers reserve the stage's other resources.
    os.environ[STAGE_RESOURCES_ENV] = json.dumps(worker_resources(spec.resources))
    store = open_store(store_root, cache)
    # Inputs as folders on this node: an upstream's artifact_dir is a path on the node that
    # ran it (an object store's cache there), so the store resolves each one here.
    inputs = {name: str(store.local_dir(o.stage, o.key))
              for (name, _), o in zip(spec.inputs, upstream, strict=True)}
    # Ray retries a task whose worker died without telling the driver; the dead attempt's
    # temporary folder is the trace it leaves, so the sweep can say the stage was retried.
    earlier = store.dead_attempts(spec.stage, spec.key)
    outcome = run_cached(store, spec, inputs)
    return dataclasses.replace(outcome, attempt=earlier + 1, node_id=_node_id())


def _node_id() -> str:
    """The Ray node this worker runs on: a host may run several (a local test cluster)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


STAGE_RESOURCES_ENV = "SYNTHSCALE_STAGE_RESOURCES"     # read by ray_train.py


def worker_resources(res) -> dict[str, float]:
    """A Ray Train worker's reservation beyond CPU/GPU: the stage's custom resource and
    memory (`StageResources`), as Ray resource names."""
    extra = {res.custom_resource: res.custom_amount} if res.custom_resource else {}
    if res.memory_gb:
        extra["memory"] = float(res.memory_bytes)
    return extra


def _remote_stages():
    """(shared, isolated): the remote function for CPU stages, whose workers Ray reuses,
    and the one for GPU stages, whose worker exits after one stage."""
    import ray

    @ray.remote
    def execute(spec: StageSpec, store_root: str, cache: str, *upstream: Outcome) -> Outcome:
        return _execute(spec, store_root, upstream, cache)

    @ray.remote(max_calls=1)
    def execute_in_own_process(spec: StageSpec, store_root: str, cache: str,
                               *upstream: Outcome) -> Outcome:
        return _execute(spec, store_root, upstream, cache)

    return execute, execute_in_own_process


def train_workers(spec: StageSpec) -> int:
    """How many Ray Train workers a training stage launches (`train.num_workers`; 1: none,
    it trains in its own task)."""
    method = getattr(spec.params, "method", None)
    return method.parallel.num_workers if method is not None else 1


def task_options(spec: StageSpec, config: Config) -> dict:
    """What the stage's Ray task reserves, and how it is retried."""
    res = spec.resources
    options = dict(num_cpus=res.num_cpus, num_gpus=res.num_gpus, max_retries=config.cluster.max_retries,
                   retry_exceptions=config.cluster.retry_exceptions, name=spec.id)
    if res.memory_gb:
        options["memory"] = res.memory_bytes
    if res.custom_resource:
        options["resources"] = {res.custom_resource: res.custom_amount}
    if train_workers(spec) > 1:
        # A data-parallel stage's task only launches a TorchTrainer and waits for it
        # (ray_train.py): each worker reserves the stage's resources instead (a custom one
        # too, so workers land only where it is), and the task holding them too could
        # leave the workers unplaceable.
        options.update(num_cpus=0, num_gpus=0)
        options.pop("memory", None)
        options.pop("resources", None)
    return options


def _submit(remote, spec: StageSpec, config: Config, store: ArtifactStore, deps: list):
    """Submit `spec` to run on a node (`store`: an ArtifactStore or ObjectStore)."""
    shared, isolated = remote
    options = task_options(spec, config)
    execute = isolated if options["num_gpus"] > 0 else shared
    return execute.options(**options).remote(spec, str(store.root), _cache_setting(config), *deps)


def _on_driver(store, outcome: Outcome) -> Outcome:
    """`outcome` with its folder on the driver's node, where results, predictions and
    provenance are read: an object store's worker returns its own node's cache path (the
    driver then downloads the artifact without its model, which it never loads, or finds
    it in its cache on the same node)."""
    if store is None or isinstance(store, ArtifactStore):
        return outcome
    here = store.local_dir(outcome.stage, outcome.key, model=False)
    return dataclasses.replace(outcome, artifact_dir=str(here))


def _cache_setting(config: Config) -> str:
    """cluster.artifact_cache as the nodes get it: a relative path is the driver's (a worker's
    working directory is its own); empty and ~/... are resolved on each node."""
    cache = config.cluster.artifact_cache
    return cache if not cache or cache.startswith("~") else str(Path(cache).resolve())


def run_plan(plan: Plan, config: Config, events: Events,
             poll_seconds: float = 0.5) -> RunReport:
    """Run every unfinished stage of `plan` on the connected Ray; blocks until done."""

    store = open_store(config.artifacts_root, config.cluster.artifact_cache)
    store.clean_stale()
    report = RunReport()
    remote = None               # Ray's remote functions, made when a first stage must run
    pending: dict = {}          # ObjectRef -> key
    refs: dict[str, object] = {}
    for spec in plan.specs:     # topological order: inputs are known before their users
        if store.is_done(spec.stage, spec.key):
            report.outcomes[spec.key] = store.load(spec.stage, spec.key, model=False)
            events.finished(spec, report.outcomes[spec.key])
            continue
        deps = [refs.get(k) or report.outcomes[k] for _, k in spec.inputs]
        remote = remote or _remote_stages()
        refs[spec.key] = _submit(remote, spec, config, store, deps)
        pending[refs[spec.key]] = spec.key
        events.submitted(spec)
    _collect(plan, pending, report, events, poll_seconds, config.cluster.fail_fast, store)
    return report


def _collect(plan: Plan, pending: dict, report: RunReport, events: Events,
             poll_seconds: float, fail_fast: bool = False, store=None) -> None:
    import ray
    from ray.exceptions import RayError

    while pending:
        if fail_fast and report.failed:
            _cancel_pending(plan, pending, report, events, next(iter(report.failed)), store)
            return
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=poll_seconds)
        events.tick()
        for ref in ready:
            if ref not in pending:      # collected already, as a failed upstream stage
                continue
            key = pending.pop(ref)
            spec = plan.get(key)
            try:
                outcome = ray.get(ref)
            except RayError as exc:
                _record_upstream_failures(plan, key, pending, report, events)
                _record_failure(plan, spec, exc, report, events)
                continue
            report.outcomes[key] = _on_driver(store, outcome)
            events.finished(spec, report.outcomes[key])


def _record_upstream_failures(plan: Plan, key: str, pending: dict, report: RunReport,
                              events: Events) -> None:
    """Ray fails the dependents of a stage that raised with that stage's error, and may hand
    one back before the stage itself: record the failed upstream stages first, so the stage
    that raised is the one reported FAILED and its dependents are skipped."""
    import ray
    from ray.exceptions import RayError

    refs = {k: ref for ref, k in pending.items()}
    for upstream in [k for k in plan.ancestors(key)[:-1] if k in refs]:
        ready, _ = ray.wait([refs[upstream]], timeout=1.0)
        if not ready:
            continue
        try:
            ray.get(ready[0])
        except RayError as exc:
            del pending[refs[upstream]]
            _record_failure(plan, plan.get(upstream), exc, report, events)


def _record_failure(plan: Plan, spec: StageSpec, exc: Exception, report: RunReport,
                    events: Events) -> None:
    failed_upstream = _failed_upstream(plan, spec.key, report)
    if failed_upstream is not None:
        report.skipped[spec.key] = failed_upstream
        events.skipped(spec, plan.get(failed_upstream))
        return
    message = one_line(getattr(exc, "cause", None) or exc)
    report.failed[spec.key] = message
    events.failed(spec, message)


def _failed_upstream(plan: Plan, key: str, report: RunReport) -> str | None:
    """The first stage `key` depends on that failed or was skipped, if any."""
    return next((k for k in plan.ancestors(key)[:-1] if k in report.failed or k in report.skipped),
                None)


CANCEL_WAIT_SECONDS = 60.0   # for Ray to confirm the cancelled tasks (a killed worker: < 1 s)


def _cancel_pending(plan: Plan, pending: dict, report: RunReport, events: Events,
                    failure: str, store=None) -> None:
    """--fail-fast after the failure of `failure`: cancel every pending stage; a running one's
    worker is killed (force), which Ray does not retry. A stage that finished before its
    cancel arrived is kept as finished; the failed stage's dependents stay skipped."""
    import ray
    from ray.exceptions import RayError

    for ref in pending:
        ray.cancel(ref, force=True)
    ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_SECONDS)
    by_key = {key: ref for ref, key in pending.items()}
    for spec in [s for s in plan.specs if s.key in by_key]:   # upstream first
        ref = by_key[spec.key]
        try:
            outcome = ray.get(ref, timeout=0) if ref in ready else None
        except RayError:
            outcome = None
        if outcome is not None:
            report.outcomes[spec.key] = _on_driver(store, outcome)
            events.finished(spec, report.outcomes[spec.key])
        elif _failed_upstream(plan, spec.key, report) is not None:
            report.skipped[spec.key] = _failed_upstream(plan, spec.key, report)
            events.skipped(spec, plan.get(report.skipped[spec.key]))
        else:
            report.cancelled[spec.key] = failure
            events.cancelled(spec, plan.get(failure))
    pending.clear()
