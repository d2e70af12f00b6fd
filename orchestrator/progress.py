"""Progress display for a sweep: stages done / total, what is in flight, ETA.

One line per finished stage (so logs and CI output stay readable), plus, on a
terminal, a status line redrawn in place while stages run. The ETA is the cost
model of `plan --estimate` (orchestrator/estimate.py) over the stages left, divided
by how many run at once. Each stage left is predicted, first found first:

1. from the throughput its kind measured in the store before this sweep, or else in
   the shipped prior (the estimator the sweep passes in), times this sweep's speed:
   actual / predicted seconds of the stages of that kind already done here, or of all
   kinds until one of its own is done (the machine is busier, or faster, than the one
   that measured);
2. from the stages of its kind done in this sweep (the same model, fitted on them);
3. from its stage's other variants, measured before (times the speed) or here;
4. otherwise a lower bound: the mean duration of the stages done here, or as long as
   a stage of that kind has been running, whichever is longer; the ETA is then shown
   as a lower bound (">").

A stage running (in flight with its inputs done, among the first `parallelism` such)
counts for what is left of its prediction. Until the sweep's first stage finishes, a
stage running past its prediction is evidence too: the speed is at least the smallest
elapsed / predicted seconds of them (the base model pre-training on a busier machine
than the prior's must not leave the ETA frozen for minutes); after that the finished
stages' speed rules, as which stages wait for a slot is unseen and a waiting 1-second
stage looked like a 100x overrun. The time left is the work over the slots, or the
longest chain of stages left if that is longer (the last cells' stages run one after
another). Before any stage has finished and with nothing measured before, it says so
instead of guessing.

Must not import ray or mlflow: tests replay recorded sweeps through it.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import defaultdict

from orchestrator.estimate import Estimator, Observation, format_seconds, kind_of, observe
from orchestrator.planning import Plan, StageSpec
from orchestrator.stages.evaluate import EvalResult
from orchestrator.store import Outcome

LOG_STATUS_SECONDS = 60.0


def _predicted(estimator: Estimator, spec: StageSpec):
    """The estimator's prediction, or None where it cannot make one: an ETA is a display
    and must never stop a sweep (an overflow in a fit once did)."""
    try:
        return estimator.predict_spec(spec)
    except (ArithmeticError, ValueError):
        return None


class Progress:
    def __init__(self, plan: Plan, parallelism: int, stream=None,
                 estimator: Estimator | None = None):
        self.plan = plan
        self.total = len(plan.specs)
        self.parallelism = max(1, parallelism)
        self.stream = stream or sys.stdout
        self.interactive = self.stream.isatty()
        self.done: set[str] = set()
        self.in_flight: dict[str, float] = {}          # key -> submit time
        self.finished_at: dict[str, float] = {}        # key -> when it finished (or was found)
        self.durations: dict[str, list[float]] = defaultdict(list)
        self.cached = 0
        self.not_run = 0                                # failed, skipped or cancelled
        self.start = time.monotonic()
        self._last_status = time.monotonic()
        # Predictions from what the store measured before this sweep, fixed at its start;
        # the stages done here give their actual / predicted ratio and their own fits.
        self.prior = {s.key: _predicted(estimator, s) for s in plan.specs} if estimator else {}
        self.live = Estimator()
        self.speed: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # kind: actual, predicted

    # -- events from the runner
    def submitted(self, spec: StageSpec) -> None:
        self.in_flight[spec.key] = time.monotonic()

    def finished(self, spec: StageSpec, outcome: Outcome) -> None:
        self.in_flight.pop(spec.key, None)
        self.done.add(spec.key)
        self.finished_at[spec.key] = time.monotonic()
        if outcome.cached:
            self.cached += 1
            how = "cached"
        else:
            self.durations[spec.stage].append(outcome.wall_seconds)
            self._measured(spec, outcome)
            how = f"{format_seconds(outcome.wall_seconds)} on {outcome.node}"
        self._line(f"{spec.id} {how}{self._headline(outcome)}")

    def _measured(self, spec: StageSpec, outcome: Outcome) -> None:
        seen = observe(spec.stage, spec.params, spec.id, outcome.result, spec.key)
        if seen is not None:
            self.live.add(Observation(seen.kind, seen.stage, seen.units, seen.tokens,
                                      outcome.wall_seconds, seen.n, spec.key))
        before = self.prior.get(spec.key)
        if before is not None and not before.lower_bound and before.seconds > 0:
            for kind in (seen.kind if seen else kind_of(spec.stage, spec.id), "*"):
                self.speed[kind][0] += outcome.wall_seconds
                self.speed[kind][1] += before.seconds

    def failed(self, spec: StageSpec, error: str) -> None:
        self.in_flight.pop(spec.key, None)
        self.done.add(spec.key)
        self.not_run += 1
        self._line(f"FAILED {spec.id}: {error}")

    def skipped(self, spec: StageSpec, upstream: StageSpec) -> None:
        self.in_flight.pop(spec.key, None)
        self.done.add(spec.key)
        self.not_run += 1
        self._line(f"skipped {spec.id} (upstream {upstream.id} failed)")

    def cancelled(self, spec: StageSpec, failure: StageSpec) -> None:
        self.in_flight.pop(spec.key, None)
        self.done.add(spec.key)
        self.not_run += 1
        self._line(f"cancelled {spec.id} (--fail-fast after FAILED {failure.id})")

    def tick(self) -> None:
        now = time.monotonic()
        if self.interactive and now - self._last_status > 1.0:
            self._last_status = now
            self.stream.write("\r\033[K" + self.status())
            self.stream.flush()
        elif not self.interactive and now - self._last_status > LOG_STATUS_SECONDS:
            # In a log (CI, nohup, a cluster job) a status line a minute shows it is alive.
            self._last_status = now
            self.stream.write(self.status() + "\n")
            self.stream.flush()

    # -- rendering
    @staticmethod
    def _headline(outcome: Outcome) -> str:
        result = outcome.result
        if isinstance(result, EvalResult):
            return f"  test_error={result.test_error:.3f}"
        loss = getattr(result, "final_loss", float("nan"))
        return f"  loss={loss:.3f}" if math.isfinite(loss) else ""

    def _line(self, text: str) -> None:
        prefix = "\r\033[K" if self.interactive else ""
        count = f"[{len(self.done)}/{self.total}]"
        self.stream.write(f"{prefix}{count} {text}\n")
        if self.interactive:
            self.stream.write(self.status())
        self.stream.flush()

    def eta_seconds(self) -> float | None:
        """Seconds of work left over the parallel slots; None before any stage ran."""
        eta, _ = self._eta()
        return eta

    def _eta(self) -> tuple[float | None, bool]:
        """(seconds left, whether that is only a lower bound)."""
        remaining = [s for s in self.plan.specs if s.key not in self.done]
        if not remaining:
            return 0.0, False
        all_durations = [d for ds in self.durations.values() for d in ds]
        # Once per status line, not per remaining stage: the plan may hold thousands.
        running = self._running(time.monotonic())
        predicted = [self._predict(spec, running) for spec in remaining]
        if not all_durations and any(p is None for p in predicted):
            return None, True
        # The median, not the mean: one long stage (the base model's pre-training, minutes
        # where a cell's stages take seconds) made every unmeasured stage look that slow.
        fallback = statistics.median(all_durations) if all_durations else 0.0
        # A kind no stage of has finished yet takes at least as long as its
        # longest-running member so far (a slow base model must not read "ETA 8s").
        running_for: dict[str, float] = defaultdict(float)
        for key, seconds in running.items():
            stage = self.plan.get(key).stage
            running_for[stage] = max(running_for[stage], seconds)
        work, unmeasured = 0.0, False
        ends: dict[str, float] = {}     # key -> when it ends, its inputs' chains first
        for spec, seconds in zip(remaining, predicted, strict=True):   # topological order
            if seconds is None:
                unmeasured = True
                seconds = max(fallback, running_for.get(spec.stage, 0.0))
            elif spec.key in running:               # what is left of it
                seconds = max(seconds - running[spec.key], 0.0)
            work += seconds
            ends[spec.key] = seconds + max((ends.get(k, 0.0) for _, k in spec.inputs), default=0.0)
        # The work over the slots, or the longest chain left if that is longer: the last
        # cells' chains (sample -> rft_data -> sft -> evaluate) run one stage at a time.
        return max(work / self.parallelism, max(ends.values())), unmeasured

    def _predict(self, spec: StageSpec, running: dict[str, float]) -> float | None:
        """Seconds for a stage not done yet (the module docstring's order); None: unknown.
        `running`: `_running`'s answer for now."""
        before = self.prior.get(spec.key)
        kind = kind_of(spec.stage, spec.id)
        if before is not None and before.basis in ("fit", "prior"):
            return before.seconds * self._speed(kind, running)
        here = _predicted(self.live, spec) if self.live.observations else None
        if here is not None and here.basis == "fit":
            return here.seconds
        if before is not None and not before.lower_bound:
            return before.seconds * self._speed(kind, running)
        if here is not None and not here.lower_bound:
            return here.seconds
        return None

    def _speed(self, kind: str, running: dict[str, float] | None = None) -> float:
        """Actual / predicted seconds of this sweep's done stages: of `kind` once one is;
        before any is done, at least the smallest overrun of the stages `running` (default:
        `_running` now)."""
        actual, predicted = self.speed[kind] if self.speed[kind][1] > 0 else self.speed["*"]
        if predicted > 0:                   # a stage has finished: its speed is measured
            return actual / predicted
        overruns = []
        if running is None:
            running = self._running(time.monotonic())
        for key, seconds in running.items():
            before = self.prior.get(key)
            if before is not None and before.seconds > 0 and not before.lower_bound:
                overruns.append(seconds / before.seconds)
        # The smallest: which of them really runs is unknown (one may still wait for CPUs
        # that another holds), and at least one does, so the speed is at least that.
        return max(1.0, min(overruns)) if overruns else 1.0

    def _running(self, now: float) -> dict[str, float]:
        """Seconds each stage in flight has probably been running. The runner submits a
        stage before its inputs exist (Ray holds it until they do), and more stages than
        run at once: so counted from when its last input finished, and only for the
        `parallelism` stages that became ready first (the rest wait for a slot)."""
        ready = {}
        for key, submitted in self.in_flight.items():
            inputs = [k for _, k in self.plan.get(key).inputs]
            if all(k in self.finished_at for k in inputs):
                ready[key] = max([submitted, *(self.finished_at[k] for k in inputs)])
        first = sorted(ready, key=ready.get)[:self.parallelism]
        return {key: now - ready[key] for key in first}

    def status(self) -> str:
        eta, lower_bound = self._eta()
        if eta is None:
            eta_text = "ETA after the first stage"
        else:
            eta_text = f"ETA {'>' if lower_bound else '~'}{format_seconds(eta)}"
            if not any(self.durations.values()):      # nothing timed on this machine yet
                eta_text += " (from earlier runs, before any timing here)"
        running = sorted(self.in_flight, key=self.in_flight.get)[:3]
        names = ", ".join(self.plan.get(k).id for k in running)
        elapsed = format_seconds(time.monotonic() - self.start)
        return (f"[{len(self.done)}/{self.total} done, {elapsed} elapsed, {eta_text}] "
                f"queued/running: {names or '-'}")

    def summary(self) -> str:
        executed = len(self.done) - self.cached - self.not_run
        failed = f", {self.not_run} failed, skipped or cancelled" if self.not_run else ""
        return (f"{len(self.done)}/{self.total} stages in {format_seconds(time.monotonic() - self.start)}"
                f" ({executed} run, {self.cached} cached{failed})")
