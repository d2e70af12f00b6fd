"""The plan's types: stage specs with content-addressed keys, grid cells, the DAG.

Each stage's cache key hashes its name, its code version, its resolved config
slice and the keys of its inputs, so

- a re-run finds finished stages by key and skips them (resume),
- two sweeps that share a stage (the same SFT cell) share its output,
- changing any knob a stage reads gives it, and everything downstream, a new key.

Pure: no Ray, MLflow or torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from orchestrator.config import Config, StageResources
from orchestrator.config_schema import to_dict
from orchestrator.contract import KEY_NEUTRAL
from orchestrator.stages import STAGES


@dataclass(frozen=True)
class StageSpec:
    """One stage execution in the plan."""

    id: str                                 # readable and unique: "sft[n=1000,seed=0]"
    stage: str                              # name in the stage registry
    params: Any                             # the typed config slice the stage function receives
    inputs: tuple[tuple[str, str], ...]     # (input name, key of the upstream stage)
    key: str                                # content-addressed cache key
    resources: StageResources
    tags: tuple[tuple[str, str], ...] = ()  # data_type / n / seed, for tracking

    @property
    def tag_dict(self) -> dict[str, str]:
        return dict(self.tags)


@dataclass(frozen=True)
class Cell:
    """One point of the scaling curve: a data type at size n and seed."""

    data_type: str
    n: int
    seed: int
    eval_key: str                # the evaluate stage whose test_error this cell reports
    chain: tuple[str, ...]       # keys of every stage the cell depends on (cost accounting)


@dataclass
class Plan:
    specs: list[StageSpec] = field(default_factory=list)   # unique by key, topologically ordered
    cells: list[Cell] = field(default_factory=list)
    _by_key: dict[str, StageSpec] = field(default_factory=dict, repr=False)

    def add(self, spec: StageSpec) -> str:
        if spec.key not in self._by_key:
            self._by_key[spec.key] = spec
            self.specs.append(spec)
        return spec.key

    def get(self, key: str) -> StageSpec:
        return self._by_key[key]

    def ancestors(self, key: str) -> list[str]:
        """`key` and every stage it depends on, each once, upstream first."""
        seen: dict[str, None] = {}

        def visit(k: str) -> None:
            for _, upstream in self._by_key[k].inputs:
                visit(upstream)
            seen.setdefault(k, None)

        visit(key)
        return list(seen)


def key_data(obj: Any) -> Any:
    """Params as the key sees them: `to_dict`, less KEY_NEUTRAL fields at their default."""
    if dataclasses.is_dataclass(obj):
        return {f.name: key_data(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.metadata.get(KEY_NEUTRAL) and getattr(obj, f.name) == _default(f))}
    return to_dict(obj)


def _default(f: dataclasses.Field) -> Any:
    """A field's default, also when it is given as a factory (a nested config's)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def cache_key(stage: str, params: Any, inputs: tuple[tuple[str, str], ...]) -> str:
    """sha256 over stage name, code version, resolved params and input keys."""
    payload = {
        "stage": stage,
        "version": STAGES[stage].version,
        "params": key_data(params),
        "inputs": sorted(inputs),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def make_spec(config: Config, stage: str, label: str, params: Any,
              inputs: dict[str, str] | None = None, tags: dict[str, Any] | None = None) -> StageSpec:
    """A spec with its key computed; `label` is the readable part of its id. The inputs
    must be exactly the ones the stage reads (`STAGES[stage].inputs`)."""
    pairs = tuple(sorted((inputs or {}).items()))
    expected = sorted(STAGES[stage].inputs)
    if [name for name, _ in pairs] != expected:
        raise ValueError(f"{stage}: wired inputs {[n for n, _ in pairs]}, the stage reads {expected}")
    resources = getattr(config.cluster.resources, STAGES[stage].resource_group)
    return StageSpec(
        id=f"{stage}[{label}]" if label else stage,
        stage=stage,
        params=params,
        inputs=pairs,
        key=cache_key(stage, params, pairs),
        resources=resources,
        tags=tuple((k, str(v)) for k, v in (tags or {}).items()),
    )


def describe_plan(plan: Plan) -> str:
    """A human-readable table of the plan (the `plan` CLI command)."""
    lines = [f"{len(plan.specs)} stages, {len(plan.cells)} grid cells"]
    for spec in plan.specs:
        deps = ", ".join(name for name, _ in spec.inputs) or "-"
        lines.append(f"  {spec.key[:12]}  {spec.id:<44} <- {deps}")
    return "\n".join(lines)
