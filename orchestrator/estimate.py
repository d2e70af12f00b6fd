"""What a plan will cost before it runs (`plan --estimate`) and what is left of a running
sweep (the progress ETA), from throughput measured by finished stages.

Every finished stage folder records its params (`spec.json`) and its cost contract
(`result.json`: `train_tokens`, `generated_tokens`, `wall_seconds`). Per stage *kind*
(the stage, plus its variant where the variant trains on other data: `sft/rft_self` is
not `sft`), the model is:

- units: how much work the stage's own params ask for, before it runs: n x epochs for
  training, n x M for self-sampling, n x negatives x K for rollouts, n_test (x pass@k
  samples) for evaluation, pre-training documents x epochs for the tiny base model;
  n for the data-preparation stages (`units_of`);
- tokens = units x the kind's measured tokens per unit (train tokens for training
  stages, generated tokens for generation stages);
- seconds = overhead + seconds_per_token x tokens (tokens: units for the kinds that
  make none), fitted by least squares in log seconds over the kind's finished stages,
  both coefficients non-negative, the overhead below the fastest stage's time; finished
  stages of one size only give a pure seconds-per-token (no overhead);
- the 95 % prediction interval: seconds x exp(+-t * s * sqrt(1 + h)), s the spread of the
  log residuals, h the leverage of the new point in log tokens, t Student's at s's degrees
  of freedom. s pools the m - p residual degrees of freedom with a prior spread of a factor
  of 2 worth two residuals (`ASSUMED_LOG_SPREAD`, `PRIOR_DOF`), so a kind measured once or
  twice gets a factor-2-ish interval, not a zero or an infinite one.

A kind the stores never measured is predicted, first found first: from the shipped prior
(`basis` "prior", below), from its stage's other variants (`basis` "stage"), and failing
that by a lower bound (`basis` "lower bound"): one token per unit at the fastest
seconds-per-token measured for any kind. A lower bound is marked as such wherever it is
shown and makes every total that includes it a lower bound.

The shipped prior (`throughput_prior.json` beside this module, written by `make
throughput-prior` from the embedded demo's store) holds the demo's own measurements, so
a fresh store's first `make sweep` has an ETA and `plan --estimate` has figures. It
applies only to plans of the same model (the tiny model's architecture) on CPU stages,
and it was timed on another machine: `plan --estimate` widens its intervals by
`PRIOR_MACHINE_FACTOR` either way, and the live ETA rescales it by the speed the sweep
measures (orchestrator/progress.py).

Pure: reads JSON files; must not import ray, mlflow or torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config_schema import to_dict
from orchestrator.store import DONE, RESULT, SPEC

TRAINING = ("base_model", "sft", "dpo")
GENERATING = ("teacher_generate", "sample", "rollouts", "evaluate")
VARIANT_KINDS = ("sft", "dpo")          # variants of these train on different data
ASSUMED_LOG_SPREAD = math.log(2.0) / 1.96   # 95 % within a factor of 2 when nothing says more
PRIOR_DOF = 2                               # ... worth this many residuals
LEVEL = 0.95
PRIOR_FILE = Path(__file__).with_name("throughput_prior.json")
PRIOR_MACHINE_FACTOR = 3.0       # another machine: up to 3x slower or faster, unmeasured
ARCHITECTURE = ("base", "hidden_size", "intermediate_size", "num_heads", "num_layers",
                "vocab_size", "max_position_embeddings")


def _n_from_id(spec_id: str) -> float:
    found = re.search(r"\bn=(\d+)", spec_id)
    return float(found.group(1)) if found else 1.0


def kind_of(stage: str, spec_id: str) -> str:
    """`sft`, `sft/rft_self`, `dpo/dpo_per_step`, ...: the variant from the spec id's label."""
    label = spec_id[len(stage) + 1:-1] if spec_id.startswith(stage + "[") else ""
    first = label.split(",")[0]
    return f"{stage}/{first}" if stage in VARIANT_KINDS and first and "=" not in first else stage


def units_of(stage: str, params: dict[str, Any], spec_id: str) -> float:
    """The work a stage's params ask for (see the module docstring), at least 1."""
    n = float(params.get("n") or _n_from_id(spec_id))
    if stage == "base_model":
        model = params.get("model") or {}
        units = float(model.get("pretrain_docs", 0)) * float(model.get("pretrain_epochs", 1.0))
    elif stage == "teacher_generate":
        per_problem = (params.get("teacher") or {}).get("samples_per_problem", 1)
        units = float(params.get("n_max", 1)) * float(per_problem)
    elif stage == "sft":
        units = n * float(params["sft"]["epochs"])
    elif stage == "dpo":
        units = n * float(params["dpo"]["epochs"])
    elif stage == "sample":
        units = n * float(params["sampling"]["samples_per_problem"])
    elif stage == "rollouts":
        units = n * float(params["negatives_per_problem"]) * float(params["rollouts"])
    elif stage == "evaluate":
        pass_k = params["eval"]
        samples = (pass_k["pass_k_samples"] or pass_k["pass_k"]) if pass_k["pass_k"] else 0
        units = float(params["n_test"]) * (1 + samples)
    else:                                    # rft_data, pairs, step_pairs, human_data
        units = n
    return max(units, 1.0)


def tokens_of(stage: str, result: dict[str, Any]) -> float:
    field = "train_tokens" if stage in TRAINING else "generated_tokens"
    return float(result.get(field, 0) or 0)


@dataclass(frozen=True)
class Observation:
    """One finished stage: its kind, the work its params asked for, what it measured."""

    kind: str
    stage: str
    units: float
    tokens: float
    seconds: float
    n: float = 0.0          # grid size, when the stage has one (for held-out checks)
    key: str = ""


@dataclass(frozen=True)
class Prediction:
    seconds: float
    low: float
    high: float
    tokens: float
    basis: str              # "fit" (this kind), "prior" (the shipped prior's fit of it),
                            # "stage" (its stage's other variants), "lower bound"
    measured: int = 0       # finished stages the fit rests on

    @property
    def lower_bound(self) -> bool:
        return self.basis == "lower bound"


MAX_FACTOR = 1e6     # the widest prediction interval, as a factor either way


@dataclass(frozen=True)
class KindFit:
    """seconds = overhead + per_token x tokens; tokens = units x tokens_per_unit."""

    overhead: float
    per_token: float
    tokens_per_unit: float      # 0: the kind makes no tokens (units drive the time)
    log_spread: float
    dof: int
    log_x: tuple[float, ...]    # the fitted points' log work, for leverage

    def work(self, units: float) -> float:
        return units * self.tokens_per_unit if self.tokens_per_unit > 0 else units

    def predict(self, units: float, basis: str) -> Prediction:
        x = self.work(units)
        seconds = self.overhead + self.per_token * x
        m = len(self.log_x)
        mean = sum(self.log_x) / m
        sxx = sum((v - mean) ** 2 for v in self.log_x)
        far = (math.log(x) - mean) ** 2 / sxx if sxx > 0 and x > 0 else 0.0
        leverage = 1 / m + far
        t = t_quantile(self.dof)
        # Far outside the fitted range, or fitted on two points, the interval is
        # uninformative: capped at a factor MAX_FACTOR rather than overflowing exp.
        factor = math.exp(min(t * self.log_spread * math.sqrt(1 + leverage),
                              math.log(MAX_FACTOR)))
        tokens = x if self.tokens_per_unit > 0 else 0.0
        return Prediction(seconds, seconds / factor, seconds * factor, tokens, basis, m)


def t_quantile(dof: int) -> float:
    """Two-sided 95 % quantile of Student's t (Cornish-Fisher above 5 degrees of freedom)."""
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}
    if dof in table:
        return table[dof]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def fit_kind(observations: list[Observation]) -> KindFit:
    """Least squares in log seconds of seconds = c + s x, c, s >= 0 (module docstring)."""
    tokens = sum(o.tokens for o in observations)
    per_unit = tokens / sum(o.units for o in observations) if tokens > 0 else 0.0
    xs = [(o.tokens or o.units * per_unit) if per_unit > 0 else o.units for o in observations]
    ys = [max(o.seconds, 1e-3) for o in observations]
    c, s, free = _affine_log(xs, ys)
    resid = [math.log(y / max(c + s * x, 1e-9)) for x, y in zip(xs, ys, strict=True)]
    # The assumed spread counts as PRIOR_DOF residuals: a kind measured twice does not get a
    # t quantile of 12.7 (or a spread of 0) from one degree of freedom.
    dof = len(xs) - free + PRIOR_DOF
    spread = math.sqrt((sum(r * r for r in resid) + PRIOR_DOF * ASSUMED_LOG_SPREAD**2) / dof)
    return KindFit(c, s, per_unit, spread, dof, tuple(math.log(x) for x in xs))


def _affine_log(xs: list[float], ys: list[float]) -> tuple[float, float, int]:
    """(c, s, free parameters) of seconds = c + s x, least squares in log seconds, c, s >= 0.

    Log space, because timings err by factors: a stage that took 16 s instead of 1 s must
    pull the fit as much as one that took 1 s instead of 16 s. The overhead c is searched
    between 0 and the fastest stage's time (golden section); given c, s is the geometric
    mean of (y - c) / x."""
    if len(set(xs)) < 2:          # one size: no overhead can be told apart
        return 0.0, math.exp(sum(math.log(y / x) for x, y in zip(xs, ys, strict=True))
                             / len(xs)), 1
    def fit(c: float) -> tuple[float, float]:
        s = math.exp(sum(math.log((y - c) / x) for x, y in zip(xs, ys, strict=True)) / len(xs))
        return sum((math.log(c + s * x) - math.log(y)) ** 2
                   for x, y in zip(xs, ys, strict=True)), s

    lo, hi = 0.0, 0.999 * min(ys)
    for _ in range(60):               # golden-section search of the overhead
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        lo, hi = (lo, b) if fit(a)[0] < fit(b)[0] else (a, hi)
    c = (lo + hi) / 2
    if fit(0.0)[0] <= fit(c)[0]:
        c = 0.0
    s = fit(c)[1]
    return c, s, 2 if c > 0 else 1


class Estimator:
    """Throughput per stage kind from finished stages; predicts stages that have not run."""

    def __init__(self, observations: Iterable[Observation] = (),
                 prior: Iterable[Observation] = ()):
        self.observations: list[Observation] = []
        self._fits: dict[str, KindFit] = {}
        for o in observations:
            self.add(o)
        self.prior = Estimator(prior) if prior else None

    def add(self, observation: Observation) -> None:
        if observation.seconds > 0:
            self.observations.append(observation)
            self._fits.clear()

    @classmethod
    def from_stores(cls, roots: Iterable[str | Path]) -> Estimator:
        return cls(o for root in roots for o in read_store(Path(root)))

    def _fit(self, name: str, by) -> KindFit | None:
        cache = f"{'kind' if by == 'kind' else 'stage'}:{name}"
        if cache not in self._fits:
            chosen = [o for o in self.observations if getattr(o, by) == name]
            if not chosen:
                return None
            self._fits[cache] = fit_kind(chosen)
        return self._fits[cache]

    def with_prior(self, plan) -> Estimator:
        """This estimator, falling back on the shipped prior for kinds it has not measured
        when `plan` is one the prior applies to (`shipped_prior`)."""
        return Estimator(self.observations, shipped_prior(plan))

    def predict(self, stage: str, params: Any, spec_id: str) -> Prediction:
        params = params if isinstance(params, dict) else to_dict(params)
        units = units_of(stage, params, spec_id)
        kind = kind_of(stage, spec_id)
        fit = self._fit(kind, "kind")
        if fit is not None:
            return fit.predict(units, "fit")
        prior = self.prior and self.prior._fit(kind, "kind")
        if prior:
            p = prior.predict(units, "prior")
            return dataclasses.replace(p, low=p.low / PRIOR_MACHINE_FACTOR,
                                       high=p.high * PRIOR_MACHINE_FACTOR)
        fit = self._fit(stage, "stage")
        if fit is not None:
            return fit.predict(units, "stage")
        return self._lower_bound(stage, units)

    def _lower_bound(self, stage: str, units: float) -> Prediction:
        speeds = [o.seconds / o.tokens for o in self.observations if o.tokens > 0]
        makes_tokens = stage in TRAINING or stage in GENERATING
        seconds = units * min(speeds) if speeds and makes_tokens else 0.0
        return Prediction(seconds, seconds, math.inf, units if makes_tokens else 0.0,
                          "lower bound")

    def predict_spec(self, spec) -> Prediction:
        return self.predict(spec.stage, spec.params, spec.id)


def read_store(root: Path) -> list[Observation]:
    """One observation per finished stage under `root` (unreadable ones skipped): an
    object store's cache may hold a stage twice, whole and without its model."""
    found = []
    seen: set[str] = set()
    for done in sorted(root.glob(f"*/*/{DONE}")):
        folder = done.parent
        try:
            spec = json.loads((folder / SPEC).read_text())
            result = json.loads((folder / RESULT).read_text())
        except (OSError, ValueError):
            continue
        if spec.get("key") and spec["key"] in seen:
            continue
        seen.add(spec.get("key", ""))
        observation = observe(spec.get("stage", folder.parent.name), spec.get("params") or {},
                              spec.get("id", ""), result, spec.get("key", ""))
        if observation is not None:
            found.append(observation)
    return found


def shipped_prior(plan, path: Path = PRIOR_FILE) -> list[Observation]:
    """The prior's observations when `plan` builds the model they were measured on (its
    base model stage has the same architecture) and no stage asks for a GPU; none
    otherwise, or when the file is missing or unreadable."""
    try:
        recorded = json.loads(path.read_text())
        measured = [Observation(**o) for o in recorded["observations"]]
        architecture = recorded["architecture"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if any(spec.resources.num_gpus > 0 for spec in plan.specs):
        return []
    for spec in plan.specs:
        model = to_dict(spec.params).get("model") if spec.stage == "base_model" else None
        if model is not None and architecture != _architecture(model):
            return []
    return measured


def _architecture(model: dict[str, Any]) -> dict[str, Any]:
    """The fields of a base model's `model` params that fix its speed (ARCHITECTURE)."""
    return {name: model.get(name) for name in ARCHITECTURE}


def write_prior(root: Path, path: Path = PRIOR_FILE) -> int:
    """Write the prior from the finished stages of store `root` (the embedded demo's),
    with the architecture of the model they trained; returns how many stages."""
    bases = [json.loads(spec.read_text()) for spec in sorted(root.glob(f"base_model/*/{SPEC}"))]
    if len(bases) != 1:
        raise ValueError(f"{root}: the prior needs a store of one base model, found {len(bases)}")
    model = bases[0]["params"]["model"]
    observations = [dataclasses.asdict(dataclasses.replace(o, key="")) for o in read_store(root)]
    path.write_text(json.dumps({
        "about": "stage throughput of the embedded demo, read by orchestrator/estimate.py "
                 "(shipped_prior); regenerate with `make throughput-prior`",
        "measured_with": bases[0].get("provenance", {}),
        "cpus": os.cpu_count(),
        "architecture": _architecture(model),
        "observations": observations}, indent=1, sort_keys=True) + "\n")
    return len(observations)


def observe(stage: str, params: Any, spec_id: str, result: Any, key: str = ""
            ) -> Observation | None:
    """An observation of one finished stage (None when its params are not understood)."""
    params = params if isinstance(params, dict) else to_dict(params)
    result = result if isinstance(result, dict) else to_dict(result)
    try:
        units = units_of(stage, params, spec_id)
    except (KeyError, TypeError, ValueError):      # a stage of another code version
        return None
    n = float(params.get("n") or 0) or (_n_from_id(spec_id) if "n=" in spec_id else 0.0)
    return Observation(kind_of(stage, spec_id), stage, units, tokens_of(stage, result),
                       float(result.get("wall_seconds", 0.0) or 0.0), n, key)


@dataclass(frozen=True)
class Total:
    stages: int
    seconds: float
    low: float
    high: float
    device_seconds: float
    tokens: float
    lower_bound: bool       # some stage in it is only a lower bound


def total(predictions: list[tuple[Prediction, float]]) -> Total:
    """Sum of (prediction, devices reserved) pairs. The interval sums the stages' own
    bounds (they are taken as fully correlated: one machine's speed moves them together)."""
    return Total(len(predictions), sum(p.seconds for p, _ in predictions),
                 sum(p.low for p, _ in predictions), sum(p.high for p, _ in predictions),
                 sum(p.seconds * d for p, d in predictions),
                 sum(p.tokens for p, _ in predictions),
                 any(p.lower_bound for p, _ in predictions))


@dataclass
class PlanEstimate:
    """Every stage of a plan: cached, or new with its prediction; totals."""

    rows: list[tuple[Any, Prediction | None]]       # (StageSpec, None when cached)
    by_data_type: dict[str, Total]
    sweep: Total
    observations: int


def estimate_plan(plan, is_done, estimator: Estimator, devices) -> PlanEstimate:
    """`is_done(spec)`: whether its artifact is finished; `devices(spec)`: devices it reserves."""
    rows = [(spec, None if is_done(spec) else estimator.predict_spec(spec)) for spec in plan.specs]
    new = {spec.key: (p, devices(spec)) for spec, p in rows if p is not None}
    by_type: dict[str, dict[str, tuple[Prediction, float]]] = defaultdict(dict)
    for cell in plan.cells:
        for key in cell.chain:
            if key in new:
                by_type[cell.data_type][key] = new[key]
    return PlanEstimate(rows, {t: total(list(v.values())) for t, v in by_type.items()},
                        total(list(new.values())), len(estimator.observations))


def format_seconds(seconds: float) -> str:
    """12s, 3m05s, 1h02m; `?` for an unbounded time. The progress line's format too."""
    if math.isinf(seconds):
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _fmt_tokens(tokens: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if tokens >= size:
            return f"{tokens / size:.3g}{suffix}"
    return f"{tokens:.0f}"


def _fmt_total(name: str, t: Total, price: float | None) -> str:
    at_least = ">=" if t.lower_bound else ""
    money = f", ${at_least}{t.device_seconds / 3600 * price:,.2f}" if price is not None else ""
    return (f"  {name:<14} {t.stages:>4} new  {at_least}{format_seconds(t.seconds):>7} "
            f"[{format_seconds(t.low)}, {format_seconds(t.high)}]  device {at_least}"
            f"{t.device_seconds / 3600:.3g} h{money}  tokens {at_least}{_fmt_tokens(t.tokens)}")


def describe_estimate(estimate: PlanEstimate, stores: list[str], price: float | None) -> str:
    lines = [f"estimate from {estimate.observations} finished stage(s) in "
             f"{', '.join(stores)}; wall seconds with 95 % prediction intervals; '>=' marks a "
             "lower bound (a stage kind that never ran)",
             f"  {'stage':<46} {'status':<6} {'tokens':>7} {'wall':>8}  {'95 % interval':<19} basis"]
    for spec, p in estimate.rows:
        if p is None:
            lines.append(f"  {spec.id:<46} cached")
            continue
        at_least = ">=" if p.lower_bound else ""
        basis = p.basis if p.lower_bound else f"{p.basis} of {p.measured}"
        lines.append(f"  {spec.id:<46} new    {at_least + _fmt_tokens(p.tokens):>7} "
                     f"{at_least + format_seconds(p.seconds):>8}  "
                     f"{'[' + format_seconds(p.low) + ', ' + format_seconds(p.high) + ']':<19} {basis}")
    cached = sum(p is None for _, p in estimate.rows)
    lines.append("per data type (new stages of its cells' chains; shared stages count in each, "
                 "so these overlap):")
    lines += [_fmt_total(t, total_, price) for t, total_ in sorted(estimate.by_data_type.items())]
    lines.append(f"sweep: {cached} cached, {estimate.sweep.stages} new; stage time summed "
                 "over stages (divide by the stages that run at once for wall-clock):")
    lines.append(_fmt_total("all", estimate.sweep, price))
    if any(p is not None and p.basis == "prior" for _, p in estimate.rows):
        lines.append(f"'prior': a kind no store here has run, from {PRIOR_FILE.name} (the "
                     "embedded demo's stages, timed on another machine; intervals widened "
                     f"{PRIOR_MACHINE_FACTOR:g}x either way)")
    elif not estimate.observations:
        lines.append("no finished stages to measure throughput from: every time above is a "
                     "lower bound of 0; point --store at a store where stages have run (a pilot "
                     "or smoke sweep's artifacts)")
    return "\n".join(lines)
