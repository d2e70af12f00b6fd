"""The progress display: counts, ETA from measured stage durations, log lines."""

from __future__ import annotations

import dataclasses
import io

import pytest

from orchestrator import progress as progress_module
from orchestrator.config import config_from_dict
from orchestrator.planning import expand_grid
from orchestrator.progress import Progress, format_seconds
from orchestrator.stages import STAGES
from orchestrator.stages.evaluate import EvalResult
from orchestrator.store import Outcome
from orchestrator.training import TrainResult


def outcome(spec, seconds, cached=False):
    if STAGES[spec.stage].result_type is EvalResult:
        result = EvalResult(0.5, 0.5, float("nan"), 0, 10, 0, wall_seconds=seconds)
    else:
        result = TrainResult(10, 3, 0.25, "cpu", wall_seconds=seconds)
    return Outcome(spec.key, spec.stage, "/x", result, cached, "node1", seconds)


def test_counts_eta_and_lines():
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10, 20]}, "task": {"n_train": 100}}))
    stream = io.StringIO()
    progress = Progress(plan, parallelism=2, stream=stream)
    assert progress.eta_seconds() is None            # nothing measured yet: no guess
    base, teacher, sft10, eval10, sft20, eval20 = plan.specs
    progress.finished(base, outcome(base, 0, cached=True))
    progress.finished(teacher, outcome(teacher, 2.0))
    progress.submitted(sft10)
    progress.finished(sft10, outcome(sft10, 10.0))
    # left: eval10 (unmeasured kind: mean of all = 6), sft20 (twice sft10's data: 20 s at
    # sft10's seconds per unit of work), eval20 (6): over 2 slots 16 s, but eval20 waits
    # for sft20, and that chain is longer
    assert progress.eta_seconds() == max((6 + 20 + 6) / 2, 20 + 6)
    assert progress._eta()[1] is True                  # eval unmeasured: only a lower bound
    progress.finished(eval10, outcome(eval10, 4.0))
    assert progress.eta_seconds() == 20 + 4 and progress._eta()[1] is False
    assert (len(progress.done), progress.cached, progress.not_run) == (4, 1, 0)
    progress.failed(sft20, "boom")
    progress.skipped(eval20, sft20)
    assert (len(progress.done), progress.cached, progress.not_run) == (6, 1, 2)


def test_the_display_format():
    """One check of what a person reads: a line per stage, the status and the summary."""
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    stream = io.StringIO()
    progress = Progress(plan, parallelism=1, stream=stream)
    base, teacher, sft, evaluate = plan.specs
    progress.finished(base, outcome(base, 0, cached=True))
    progress.finished(sft, outcome(sft, 10.0))
    progress.finished(evaluate, outcome(evaluate, 4.0))
    lines = stream.getvalue().splitlines()
    assert lines == ["[1/4] base_model[tiny] cached  loss=0.250",
                     "[2/4] sft[n=10,seed=0] 10s on node1  loss=0.250",
                     "[3/4] evaluate[sft_teacher,n=10,seed=0] 4s on node1  test_error=0.500"]
    assert progress.status().startswith("[3/4 done, 0s elapsed, ETA >7s] queued/running: -")
    assert progress.summary() == "3/4 stages in 0s (2 run, 1 cached)"


def test_eta_of_an_unmeasured_kind_is_at_least_its_running_time(monkeypatch):
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    clock = [100.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(plan, parallelism=1, stream=io.StringIO())
    base, teacher, sft, evaluate = plan.specs
    progress.submitted(base)
    progress.submitted(teacher)
    clock[0] += 2.0
    progress.finished(teacher, outcome(teacher, 2.0))
    clock[0] += 118.0                                   # the base model has run for 2 minutes
    # base: >= 120 s so far; sft, evaluate unmeasured: the 2 s mean
    assert progress.eta_seconds() == 120 + 2 + 2
    assert "ETA >2m04s" in progress.status()


def test_log_output_gets_a_periodic_status_line(monkeypatch):
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    stream = io.StringIO()
    progress = Progress(plan, parallelism=1, stream=stream)
    progress.tick()
    assert stream.getvalue() == ""
    monkeypatch.setattr(progress_module, "LOG_STATUS_SECONDS", 0.0)
    progress.tick()
    assert "[0/4 done" in stream.getvalue() and "ETA" in stream.getvalue()


def test_format_seconds():
    assert [format_seconds(s) for s in (5, 65, 3725)] == ["5s", "1m05s", "1h02m"]


ETA_FACTOR = 1.5            # the ETA's promise (issue 15): within 1.5x from the first stage on
ETA_SLACK_S = 2.0           # ... or within 2 s: with one sub-second stage left, 1.5x is noise


def machine_seconds(observation) -> float:
    """A deterministic machine for the replay: each stage kind its own start-up and speed,
    linear in its work. The store's real timings, taken on a loaded 2-core machine, made
    the test flaky; what is tested is the estimator and the ETA's correction, on the real
    plan's stages and their real token counts."""
    kind = sum(map(ord, observation.kind)) % 5
    work = observation.tokens if observation.tokens > 0 else observation.units
    return 1.0 + kind + work * 1e-3 * (1 + kind)


@pytest.mark.slow
def test_eta_replaying_a_real_sweep_is_within_1_5x(finished_store, monkeypatch):
    """A recorded sweep replayed with a fake clock: the store's stages at n = 100 and 200
    were measured before (the estimator), the sweep adds n = 400 on a machine twice as
    slow. From the first finished stage on, the ETA is within 1.5x of the time left.
    Stage times come from `machine_seconds`, so the test says the same on every run."""
    from orchestrator.estimate import Estimator, read_store
    from orchestrator.store import ArtifactStore

    measured = {o.key: dataclasses.replace(o, seconds=machine_seconds(o))
                for o in read_store(finished_store.root)}
    plan, store = finished_store.plan, ArtifactStore(finished_store.root)
    new = [s for s in plan.specs if measured[s.key].n == 400]
    before = Estimator(o for o in measured.values() if o.n != 400)
    slower = 2.0
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(plan, parallelism=1, stream=io.StringIO(), estimator=before)
    for spec in plan.specs:
        if spec not in new:
            progress.finished(spec, store.load(spec.stage, spec.key))
    durations = [measured[s.key].seconds * slower for s in new]
    ratios = []
    for i, spec in enumerate(new):
        progress.submitted(spec)
        clock[0] += durations[i]
        done = dataclasses.replace(store.load(spec.stage, spec.key), cached=False,
                                   wall_seconds=durations[i])
        progress.finished(spec, done)
        left = sum(durations[i + 1:])
        if left > 0:
            eta = progress.eta_seconds()
            ratios.append(eta / left)
            assert 1 / ETA_FACTOR <= eta / left <= ETA_FACTOR or abs(eta - left) <= ETA_SLACK_S, (
                f"after {spec.id}: ETA {eta:.1f} s, {left:.1f} s left (ETA / left so far: "
                f"{[round(r, 2) for r in ratios]})")
    print("ETA / time left after each stage:", [f"{r:.2f}" for r in ratios])
    assert len(ratios) == len(new) - 1


def test_one_long_stage_does_not_make_every_unmeasured_stage_look_as_slow():
    """The demo's base model pre-trains for minutes, its cells' stages take seconds: an
    unmeasured kind is guessed at the median finished stage, not the mean (the mean read
    'ETA >1h26m' 20 minutes into a fresh demo with under half an hour left)."""
    plan = expand_grid(config_from_dict({"grid": {"sizes": [10, 20, 40]},
                                         "task": {"n_train": 100}}))
    progress = Progress(plan, parallelism=1, stream=io.StringIO())
    base, teacher, *cells = plan.specs
    progress.finished(base, outcome(base, 600.0))
    progress.finished(teacher, outcome(teacher, 2.0))
    sft = [s for s in cells if s.stage == "sft"]
    progress.finished(sft[0], outcome(sft[0], 10.0))
    # left: two sft (measured kind: 20 s and 40 s at sft10's speed) and three evaluations,
    # unmeasured: 10 s each, the median of 600, 2 and 10 (the mean would be 204 s each)
    assert progress.eta_seconds() == 20 + 40 + 3 * 10


def test_a_fresh_demo_sweep_has_an_eta_from_the_shipped_prior():
    """A first `make sweep` on an empty store (issue 15): the ETA comes from the shipped
    prior (the demo's own stages, timed on another machine) rescaled by the speed this
    sweep measures. Replayed on a machine 2.5x slower than the prior's, with each stage
    taking what the prior's own run of it took: from the first finished stage on, while
    more than one stage is left, the ETA is within 1.5x of the time left. (With one left,
    the ETA is that stage's prediction, and one evaluation's time varies 2x between
    runs: 19.6 s predicted against 9.6 s, the prior's own figures.) What the fit makes of
    the prior's spread is tested; a real fresh run's figures are in the README."""
    from orchestrator.config import load_config
    from orchestrator.estimate import Estimator, observe, shipped_prior

    from ..conftest import ROOT

    plan = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    recorded: dict[tuple, list[float]] = {}
    for o in shipped_prior(plan):
        recorded.setdefault((o.kind, o.units, o.n), []).append(o.seconds)
    slower = 2.5
    durations = []
    for spec in plan.specs:
        seen = observe(spec.stage, spec.params, spec.id, outcome(spec, 0.0).result)
        durations.append(recorded[(seen.kind, seen.units, seen.n)].pop(0) * slower)
    progress = Progress(plan, parallelism=1, stream=io.StringIO(),
                        estimator=Estimator().with_prior(plan))
    assert progress.eta_seconds() is not None
    assert "(from earlier runs, before any timing here)" in progress.status()
    ratios = []
    for i, spec in enumerate(plan.specs):
        progress.finished(spec, outcome(spec, durations[i]))
        left = sum(durations[i + 1:])
        if i + 2 < len(plan.specs):
            eta = progress.eta_seconds()
            ratios.append(eta / left)
            assert 1 / ETA_FACTOR <= eta / left <= ETA_FACTOR, (
                f"after {spec.id}: ETA {eta:.1f} s, {left:.1f} s left (ETA / left so far: "
                f"{[round(r, 2) for r in ratios]})")
    assert len(ratios) == len(plan.specs) - 2
    assert "before any timing here" not in progress.status()
    print("ETA / time left after each stage:", [f"{r:.2f}" for r in ratios])


def test_a_stage_in_flight_counts_for_what_is_left_and_an_overrun_slows_the_estimate(monkeypatch):
    """While the demo's base model pre-trains (nothing finished yet), the ETA falls as it
    runs; past its predicted time, the speed is at least its elapsed / predicted, so the
    ETA grows with it instead of standing still (it stood at ~23m for 13 minutes)."""
    from orchestrator.config import load_config
    from orchestrator.estimate import Estimator

    from ..conftest import ROOT

    plan = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(plan, parallelism=1, stream=io.StringIO(),
                        estimator=Estimator().with_prior(plan))
    base = plan.specs[0]
    predicted = progress.prior[base.key].seconds
    start = progress.eta_seconds()
    progress.submitted(base)
    clock[0] = predicted / 2
    assert progress.eta_seconds() == pytest.approx(start - predicted / 2)
    clock[0] = 2 * predicted                          # twice as slow as the prior's machine
    rest = start - predicted
    assert progress.eta_seconds() == pytest.approx(2 * rest)


def test_a_stage_waiting_for_its_inputs_or_a_slot_is_not_running(monkeypatch):
    """The runner submits cells' stages while the base model still pre-trains: they wait
    in Ray and say nothing about speed (counted as running, a waiting 1-second stage read
    'ETA ~495h' a minute into the demo)."""
    from orchestrator.config import load_config
    from orchestrator.estimate import Estimator

    from ..conftest import ROOT

    plan = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(plan, parallelism=1, stream=io.StringIO(),
                        estimator=Estimator().with_prior(plan))
    base, teacher, *cells = plan.specs
    start = progress.eta_seconds()
    for spec in (base, teacher, *cells[:4]):
        progress.submitted(spec)
    progress.finished(teacher, outcome(teacher, progress.prior[teacher.key].seconds))
    clock[0] = 60.0
    assert set(progress._running(clock[0])) == {base.key}
    left = start - 60.0 - progress.prior[teacher.key].seconds
    assert progress.eta_seconds() == pytest.approx(left, rel=1e-6)


def test_a_stage_held_back_for_cpus_does_not_make_the_speed_explode(monkeypatch):
    """The demo submits the base model (2 CPUs) and the teacher pool (1 CPU) at once on 2
    CPUs: the pool waits minutes for the base model, unseen by the driver. Its 0.05-s
    prediction 'overrun' 1000-fold read 'ETA ~519h' a minute in; the speed takes the
    smallest overrun of the stages that may be running, so it stays as predicted."""
    from orchestrator.config import load_config
    from orchestrator.estimate import Estimator

    from ..conftest import ROOT

    plan = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    progress = Progress(plan, parallelism=2, stream=io.StringIO(),
                        estimator=Estimator().with_prior(plan))
    base, teacher = plan.specs[:2]
    start = progress.eta_seconds()
    progress.submitted(base)
    progress.submitted(teacher)
    clock[0] = 60.0
    assert progress._speed("sft") == 1.0
    assert start / 2 < progress.eta_seconds() < start


def test_the_eta_of_a_recorded_fresh_demo_sweep_is_within_1_5x(monkeypatch):
    """A real first `make sweep` (tests/orchestrator/data/demo_fresh_sweep.json: each
    stage's end and duration, every stage submitted at 0, as the runner does), replayed
    with the shipped prior on an empty store. From the first finished stage on, the ETA
    at each minute is within 1.5x of the time the stages then still took, until the
    last minute (where seconds of noise are large ratios). Measured: 0.80-1.44; the live
    run, before the two fixes this test holds (overruns judged only before any stage has
    finished, the longest chain left), read up to 16x."""
    import json

    from orchestrator.config import load_config
    from orchestrator.estimate import Estimator, shipped_prior

    from ..conftest import ROOT

    data = ROOT / "tests" / "orchestrator" / "data"
    recorded = json.loads((data / "demo_fresh_sweep.json").read_text())
    plan = expand_grid(load_config(data / "demo_fresh_sweep.yaml", []))    # the demo it timed
    # ... and the prior shipped then (made from that demo's stages), not today's demo's
    prior = shipped_prior(plan, data / "demo_fresh_sweep_prior.json")
    by_id = {spec.id: spec for spec in plan.specs}
    stages = sorted(recorded["stages"], key=lambda r: r["ended"])
    end = recorded["sweep_ended"]
    clock = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    assert prior, "the recorded prior no longer applies to the recorded demo's plan"
    progress = Progress(plan, parallelism=2, stream=io.StringIO(),
                        estimator=Estimator(Estimator().observations, prior))
    for spec in plan.specs:
        progress.submitted(spec)
    ratios, t, i = [], 60.0, 0
    while t < end - 60:
        while i < len(stages) and stages[i]["ended"] <= t:
            clock[0] = stages[i]["ended"]
            spec = by_id[stages[i]["id"]]
            progress.finished(spec, outcome(spec, stages[i]["wall_seconds"]))
            i += 1
        clock[0] = t
        if progress.durations:
            ratios.append(progress.eta_seconds() / (end - t))
        t += 60.0
    print("ETA / time left, each minute from the first finished stage:",
          [f"{r:.2f}" for r in ratios])
    assert len(ratios) >= 10
    assert all(1 / ETA_FACTOR <= r <= ETA_FACTOR for r in ratios), [round(r, 2) for r in ratios]
