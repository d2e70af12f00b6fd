"""Cost estimates (`plan --estimate`): the model on constructed observations, and
predictions of a held-out stage kind at a new n from a store of real finished stages."""

from __future__ import annotations

import math

import pytest

from orchestrator.cli import main
from orchestrator.config import config_from_dict
from orchestrator.estimate import (
    Estimator,
    Observation,
    estimate_plan,
    fit_kind,
    kind_of,
    read_store,
    units_of,
)
from orchestrator.planning import expand_grid
from orchestrator.results import devices_reserved

from ..conftest import ROOT
from .conftest import FINISHED_STORE_OVERRIDES

HELD_OUT_N = 400
# Tokens follow from the params and measured tokens per unit: within 25 % (measured on
# this machine: sft within 2 %, sample within 10 %; sampling lengths vary with the model).
TOKEN_TOLERANCE = 0.25
# Wall seconds on a shared 2-core machine: the held-out stage must land inside its own
# 95 % prediction interval, and within a factor of 4 of the point prediction. Measured
# here in four runs (measured / predicted): sft 0.98, 0.61, 1.09, 0.95; sample 0.37, 0.64,
# 0.63, 0.39, the closest to the bound. These stages last seconds, and on a machine other
# work shares the same stage took 2.5 s in one run and 40 s in another, hence the margin;
# README "Before you pay" has the numbers.
TIME_FACTOR = 4.0


def obs(kind, units, seconds, tokens=0.0, stage=None):
    return Observation(kind, stage or kind.split("/")[0], units, tokens, seconds)


def test_the_fit_recovers_overhead_plus_seconds_per_token():
    # 2 s overhead + 1 ms per token, 10 tokens per unit of work, no noise
    seen = [obs("sft", u, 2 + 0.001 * 10 * u, 10 * u) for u in (100, 200, 400)]
    fit = fit_kind(seen)
    assert fit.overhead == pytest.approx(2.0) and fit.per_token == pytest.approx(0.001)
    p = fit.predict(800, "fit")
    assert p.seconds == pytest.approx(2 + 8.0) and p.tokens == pytest.approx(8000)
    assert p.low < p.seconds < p.high            # the prior spread keeps an interval


def test_one_measurement_gives_seconds_per_token_and_a_factor_2_ish_interval():
    fit = fit_kind([obs("sample", 100, 10.0, 5000)])
    p = fit.predict(300, "fit")
    assert p.seconds == pytest.approx(30.0) and fit.overhead == 0
    assert 1.5 < p.high / p.seconds < 20 and math.isclose(p.high / p.seconds, p.seconds / p.low)


def test_kinds_variants_units_and_lower_bounds():
    config = config_from_dict({"grid": {"sizes": [10, 20], "data_types": ["sft_teacher",
                                                                          "rft_self"]},
                               "task": {"n_train": 100}})
    plan = expand_grid(config)
    by_id = {s.id: s for s in plan.specs}
    rft = by_id["sft[rft_self,n=20,seed=0]"]
    assert kind_of("sft", rft.id) == "sft/rft_self" and kind_of("sft", "sft[n=20,seed=0]") == "sft"
    from orchestrator.config_schema import to_dict
    assert units_of("sft", to_dict(rft.params), rft.id) == 20 * config.train.sft.epochs
    estimator = Estimator([obs("sft", 30, 3.0, 3000), obs("evaluate", 300, 1.0, 600)])
    assert estimator.predict_spec(rft).basis == "stage"          # borrows sft's fit
    never = estimator.predict_spec(by_id["sample[n=20,seed=0]"])
    # never ran: one token per unit (n x M = 80) at the fastest measured seconds per token
    # (sft's 1 ms, not evaluate's 1.7 ms)
    assert never.lower_bound and never.seconds == pytest.approx(20 * 4 * 0.001)
    assert math.isinf(never.high)
    done = {by_id["sft[n=10,seed=0]"].key}
    estimate = estimate_plan(plan, lambda s: s.key in done, estimator, devices_reserved)
    assert sum(p is None for _, p in estimate.rows) == 1
    assert estimate.sweep.stages == len(plan.specs) - 1 and estimate.sweep.lower_bound
    assert set(estimate.by_data_type) == {"sft_teacher", "rft_self"}
    assert estimate.by_data_type["sft_teacher"].stages < estimate.sweep.stages


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft", "sample"])
def test_a_held_out_kind_at_a_new_n_lands_within_the_stated_error(finished_store, kind):
    observations = read_store(finished_store.root)
    held = [o for o in observations if o.kind == kind and o.n == HELD_OUT_N]
    assert len(held) == 1
    rest = Estimator(o for o in observations if o is not held[0])
    spec = next(s for s in finished_store.plan.specs if s.key == held[0].key)
    p = rest.predict_spec(spec)
    measured = held[0]
    print(f"{kind} at n={HELD_OUT_N}: measured {measured.seconds:.2f} s, {measured.tokens:.0f} "
          f"tokens; predicted {p.seconds:.2f} s [{p.low:.2f}, {p.high:.2f}], {p.tokens:.0f}")
    assert p.basis == "fit" and p.measured == 2
    assert abs(p.tokens / measured.tokens - 1) < TOKEN_TOLERANCE
    assert p.low <= measured.seconds <= p.high
    assert 1 / TIME_FACTOR <= measured.seconds / p.seconds <= TIME_FACTOR


@pytest.mark.slow
def test_plan_estimate_command(finished_store, capsys):
    """A second seed: its stages are new and predicted, the first seed's are cached."""
    code = main(["plan", str(ROOT / "experiments" / "smoke.yaml"), *FINISHED_STORE_OVERRIDES,
                 "grid.seeds=[0,1]", f"cluster.artifacts={finished_store.root}", "--estimate",
                 "--price-per-device-hour", "2.5"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [line.strip() for line in out.splitlines()]
    row = next(line for line in lines if line.startswith("sft[n=400,seed=1]"))
    assert " new " in row and "fit of 3" in row
    assert "sft[n=400,seed=0]" in [line.split()[0] for line in lines if line.endswith("cached")]
    new = len(finished_store.plan.specs) - 2           # all but the base model and the pool
    assert f"sweep: {len(finished_store.plan.specs)} cached, {new} new" in out
    assert "$" in out and "rft_self" in out


def test_a_prediction_far_outside_the_fit_is_wide_but_never_overflows():
    """Two nearly equal fitted points and a wide spread: the t x spread x leverage exponent
    overflowed exp and the OverflowError ended a sweep through its progress line."""
    import math

    from orchestrator.estimate import MAX_FACTOR, KindFit

    fit = KindFit(overhead=1.0, per_token=0.01, tokens_per_unit=100.0, log_spread=2.0, dof=1,
                  log_x=(5.0, 5.0001))
    far = fit.predict(1e12, "fit")
    assert math.isfinite(far.high) and far.high / far.seconds == pytest.approx(MAX_FACTOR)
    assert fit.predict(0.0, "fit").seconds == 1.0          # no work: no log(0)


def test_an_empty_store_says_every_time_is_a_lower_bound():
    from orchestrator.estimate import describe_estimate

    plan = expand_grid(config_from_dict({"grid": {"sizes": [10]}, "task": {"n_train": 100}}))
    estimate = estimate_plan(plan, lambda s: False, Estimator(), devices_reserved)
    assert estimate.sweep.lower_bound and estimate.sweep.seconds == 0
    text = describe_estimate(estimate, ["runs/x/artifacts"], price=1.0)
    assert "no finished stages to measure throughput from" in text and "$>=0.00" in text


def test_the_shipped_prior_applies_only_to_its_own_model_on_cpu():
    """The demo's measurements predict the demo's kinds on a fresh store; a plan of another
    architecture or with GPU stages gets nothing from them (lower bounds, as before)."""
    from orchestrator.config import load_config
    from orchestrator.estimate import shipped_prior

    demo = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    assert {o.kind for o in shipped_prior(demo)} >= {kind_of(s.stage, s.id) for s in demo.specs}
    wider = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", ["model.hidden_size=256"]))
    gpu = expand_grid(load_config(ROOT / "experiments" / "demo.yaml",
                                  ["cluster.num_gpus=1", "cluster.resources.sft.num_gpus=1"]))
    assert shipped_prior(wider) == [] and shipped_prior(gpu) == []

    fresh = estimate_plan(demo, lambda s: False, Estimator().with_prior(demo), devices_reserved)
    assert {p.basis for _, p in fresh.rows} == {"prior"} and not fresh.sweep.lower_bound
    assert fresh.sweep.low < fresh.sweep.seconds < fresh.sweep.high
    other = estimate_plan(wider, lambda s: False, Estimator().with_prior(wider), devices_reserved)
    assert other.sweep.lower_bound


def test_a_missing_or_broken_prior_is_no_prior(tmp_path):
    from orchestrator.config import load_config
    from orchestrator.estimate import shipped_prior

    demo = expand_grid(load_config(ROOT / "experiments" / "demo.yaml", []))
    (tmp_path / "broken.json").write_text("{")
    assert shipped_prior(demo, tmp_path / "absent.json") == []
    assert shipped_prior(demo, tmp_path / "broken.json") == []
