"""The stage chain of each data type (a grid row), added to the plan cell by cell.

`CellBuilder` holds one grid point (n, seed) and adds the stages of one row's
chain, returning the key of the `evaluate` stage whose test error the cell
reports. Shared work is shared by construction: every row asks for the same
`sft` spec at (n, seed), and the plan de-duplicates by cache key, so the SFT
model is trained once for all rows. Each stage module builds its own config
slice (`from_config`); this module only wires stages together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchestrator import stages
from orchestrator.config import DATA_TYPES, Config
from orchestrator.contract import GridPoint, In
from orchestrator.planning.plan import Plan, make_spec
from orchestrator.stages.evaluate import EvalParams
from orchestrator.stages.sft import SFTParams


@dataclass(frozen=True)
class SharedStages:
    """Keys of the stages every cell shares."""

    base: str       # the base model
    teacher: str    # the synthetic pool D_syn at its largest size


def add_shared_stages(config: Config, plan: Plan) -> SharedStages:
    base = make_spec(config, "base_model", config.model.base,
                     stages.base_model.from_config(config))
    pool = make_spec(config, "teacher_generate", f"{config.teacher.kind},pool={config.pool_size}",
                     stages.teacher.from_config(config))
    return SharedStages(plan.add(base), plan.add(pool))


class CellBuilder:
    """Adds the stages of one grid point's chains to a plan; methods return stage keys."""

    def __init__(self, config: Config, plan: Plan, shared: SharedStages, point: GridPoint):
        self.config, self.plan, self.shared, self.point = config, plan, shared, point

    def _add(self, stage: str, params, inputs: dict[str, str], data_type: str = "",
             variant: str = "") -> str:
        """Add a stage at this grid point; `variant` tells apart specs of one stage in a cell."""
        at = f"n={self.point.n},seed={self.point.seed}"
        tags = {"data_type": data_type} if data_type else {}
        tags.update(n=self.point.n, seed=self.point.seed)
        return self.plan.add(make_spec(self.config, stage, f"{variant},{at}" if variant else at,
                                       params, inputs, tags))

    # ---- stages several rows share

    def sft_on_teacher(self) -> str:
        """SFT of the base model on the first n teacher solutions."""
        return self._add("sft", SFTParams.from_config(self.config, self.point),
                         {In.BASE: self.shared.base, In.DATA: self.shared.teacher}, "sft_teacher")

    def samples(self) -> str:
        """M self-samples per problem from the SFT model; shared by three rows."""
        params = stages.sample.SampleParams.from_config(self.config, self.point)
        return self._add("sample", params,
                         {In.MODEL: self.sft_on_teacher(), In.DATA: self.shared.teacher})

    def evaluate(self, model: str, data_type: str) -> str:
        return self._add("evaluate", EvalParams.from_config(self.config),
                         {In.MODEL: model}, data_type, variant=data_type)

    def dpo_from_sft(self, pairs_key: str, data_type: str) -> str:
        model = self._add("dpo", stages.dpo.DPOParams.from_config(self.config, self.point),
                          {In.MODEL: self.sft_on_teacher(), In.PAIRS: pairs_key}, data_type,
                          variant=data_type)
        return self.evaluate(model, data_type)

    # ---- one method per grid row: the key of the evaluation the cell reports

    def sft_teacher(self) -> str:
        return self.evaluate(self.sft_on_teacher(), "sft_teacher")

    def rft_self(self) -> str:
        """The base model SFT-ed on the SFT model's own correct, de-duplicated samples."""
        data_params = stages.rft_data.RFTDataParams.from_config(self.config, self.point)
        data = self._add("rft_data", data_params,
                         {In.SAMPLES: self.samples(), In.DATA: self.shared.teacher}, "rft_self")
        params = SFTParams.from_config(self.config, self.point, first_n=False)
        if self.config.rft.match_sft_steps:
            params = replace(params, match_steps_of=self.point.n)
        model = self._add("sft", params, {In.BASE: self.shared.base, In.DATA: data}, "rft_self",
                          variant="rft_self")
        return self.evaluate(model, "rft_self")

    def dpo_negative(self) -> str:
        """DPO from the SFT model on (correct, incorrect) pairs of its own samples."""
        pair_params = stages.pairs.PairsParams.from_config(self.config, self.point)
        outcome_pairs = self._add("pairs", pair_params, {In.SAMPLES: self.samples()},
                                  "dpo_negative")
        return self.dpo_from_sft(outcome_pairs, "dpo_negative")

    def step_pairs(self) -> str:
        """Per-step pairs at the first pit of the SFT model's negatives; shared by two rows."""
        samples = self.samples()
        rollout_params = stages.rollouts.RolloutParams.from_config(self.config, self.point)
        values = self._add("rollouts", rollout_params,
                           {In.MODEL: self.sft_on_teacher(), In.SAMPLES: samples}, "dpo_per_step")
        step_pair_params = stages.step_pairs.StepPairsParams.from_config(self.config, self.point)
        return self._add("step_pairs", step_pair_params,
                         {In.ROLLOUTS: values, In.SAMPLES: samples, In.DATA: self.shared.teacher},
                         "dpo_per_step")

    def dpo_per_step(self) -> str:
        """DPO from the SFT model on per-step pairs at the first pit of its negatives."""
        return self.dpo_from_sft(self.step_pairs(), "dpo_per_step")

    def dpo_nll_only(self) -> str:
        """The control for dpo_per_step: the same pairs' chosen sides, the NLL term alone
        (no rejected term), so a gain of dpo_per_step over it is the negatives' own."""
        params = stages.dpo.DPOParams.from_config(self.config, self.point, nll_only=True)
        model = self._add("dpo", params, {In.MODEL: self.sft_on_teacher(),
                                          In.PAIRS: self.step_pairs()},
                          "dpo_nll_only", variant="dpo_nll_only")
        return self.evaluate(model, "dpo_nll_only")

    def sft_human(self) -> str:
        """SFT of the base model on the benchmark's own first n training solutions."""
        data = self.plan.add(make_spec(self.config, "human_data", f"pool={self.config.pool_size}",
                                       stages.human_data.HumanDataParams.from_config(self.config)))
        model = self._add("sft", SFTParams.from_config(self.config, self.point),
                          {In.BASE: self.shared.base, In.DATA: data}, "sft_human",
                          variant="sft_human")
        return self.evaluate(model, "sft_human")


ROWS = {
    "sft_teacher": CellBuilder.sft_teacher,
    "rft_self": CellBuilder.rft_self,
    "dpo_negative": CellBuilder.dpo_negative,
    "dpo_per_step": CellBuilder.dpo_per_step,
    "dpo_nll_only": CellBuilder.dpo_nll_only,
    "sft_human": CellBuilder.sft_human,
}
if set(ROWS) != set(DATA_TYPES):    # one source for the data types: config.DATA_TYPES
    raise ImportError(f"planning.chains: rows {sorted(ROWS)} != config.DATA_TYPES")
