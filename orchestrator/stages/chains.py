"""The stage chain of each data type (a grid row), built into the plan.

One function per data type, each returning the key of the `evaluate` stage that
gives the cell's test error. Shared work is shared by construction: every
chain asks for the same `sft` spec at (n, seed), and the plan deduplicates by
cache key, so the SFT model is trained once for all rows.
"""

from __future__ import annotations

import dataclasses

from orchestrator.config import Config, ModelConfig, TeacherConfig
from orchestrator.planning import Plan, make_spec
from orchestrator.stages.base_model import BaseModelParams
from orchestrator.stages.dpo import DPOParams
from orchestrator.stages.evaluate import EvalParams
from orchestrator.stages.human_data import HumanDataParams
from orchestrator.stages.pairs import PairsParams
from orchestrator.stages.rft_data import RFTDataParams
from orchestrator.stages.rollouts import RolloutParams
from orchestrator.stages.sample import SampleParams
from orchestrator.stages.sft import SFTParams
from orchestrator.stages.step_pairs import StepPairsParams
from orchestrator.stages.teacher import TeacherParams


def shared_stages(config: Config, plan: Plan) -> dict[str, str]:
    """Stages every cell shares: the base model and the teacher pool."""
    # Slices drop what a stage does not read, so e.g. changing task.n_test
    # never retrains a model. The tiny base model reads the task's training
    # text (tokenizer, pre-training); a hub model reads no task field at all.
    task_train = dataclasses.replace(config.task, n_test=0, n_train=0)
    base_task = task_train if config.model.base == "tiny" else dataclasses.replace(
        task_train, name="arith", path="")
    base = make_spec(config, "base_model", config.model.base,
                     BaseModelParams(config.model, base_task))
    n_max = config.pool_size
    teacher = make_spec(config, "teacher_generate", f"{config.teacher.kind},pool={n_max}",
                        teacher_params(config, n_max))
    return {"base": plan.add(base), "teacher": plan.add(teacher)}


def teacher_params(config: Config, n_max: int) -> TeacherParams:
    task = dataclasses.replace(config.task, n_test=0)
    if config.teacher.kind == "oracle":   # no other teacher knob changes what the solver writes
        return TeacherParams(task, TeacherConfig(kind="oracle"), n_max)
    model = ModelConfig(base=config.teacher.model, trust_remote_code=config.model.trust_remote_code,
                        dtype=config.model.dtype)
    return TeacherParams(task, config.teacher, n_max, config.generation, model)


def sft_on_teacher(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    params = SFTParams(config.model, config.train.sft, config.train.device, seed, n)
    spec = make_spec(config, "sft", f"n={n},seed={seed}", params,
                     {"base": shared["base"], "data": shared["teacher"]},
                     data_type="sft_teacher", n=n, seed=seed)
    return plan.add(spec)


def evaluate(config: Config, plan: Plan, model_key: str, data_type: str, n: int, seed: int) -> str:
    params = EvalParams(config.task, config.eval, config.generation, config.model)
    spec = make_spec(config, "evaluate", f"{data_type},n={n},seed={seed}", params,
                     {"model": model_key}, data_type=data_type, n=n, seed=seed)
    return plan.add(spec)


def chain_sft_teacher(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """SFT of the base model on the first n teacher solutions."""
    return evaluate(config, plan, sft_on_teacher(config, plan, shared, n, seed), "sft_teacher", n, seed)


def samples(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """M self-samples per problem from the SFT model at (n, seed); shared by three rows."""
    params = SampleParams(config.sampling, config.generation, config.model, config.task.name, n, seed)
    spec = make_spec(config, "sample", f"n={n},seed={seed}", params,
                     {"model": sft_on_teacher(config, plan, shared, n, seed), "data": shared["teacher"]},
                     n=n, seed=seed)
    return plan.add(spec)


def chain_rft_self(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """The base model SFT-ed on the SFT model's own correct, de-duplicated samples."""
    data = plan.add(make_spec(config, "rft_data", f"n={n},seed={seed}", RFTDataParams(config.rft, n),
                              {"samples": samples(config, plan, shared, n, seed),
                               "data": shared["teacher"]}, data_type="rft_self", n=n, seed=seed))
    params = SFTParams(config.model, config.train.sft, config.train.device, seed, None)
    model = plan.add(make_spec(config, "sft", f"rft_self,n={n},seed={seed}", params,
                               {"base": shared["base"], "data": data},
                               data_type="rft_self", n=n, seed=seed))
    return evaluate(config, plan, model, "rft_self", n, seed)


def dpo_from_sft(config: Config, plan: Plan, shared: dict[str, str], pairs_key: str,
                 data_type: str, n: int, seed: int) -> str:
    params = DPOParams(config.model, config.train.dpo, config.train.device, seed)
    model = plan.add(make_spec(config, "dpo", f"{data_type},n={n},seed={seed}", params,
                               {"model": sft_on_teacher(config, plan, shared, n, seed),
                                "pairs": pairs_key}, data_type=data_type, n=n, seed=seed))
    return evaluate(config, plan, model, data_type, n, seed)


def chain_dpo_negative(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """DPO from the SFT model on (correct, incorrect) pairs of its own samples."""
    pairs = plan.add(make_spec(config, "pairs", f"n={n},seed={seed}", PairsParams(config.pairs, seed),
                               {"samples": samples(config, plan, shared, n, seed)},
                               data_type="dpo_negative", n=n, seed=seed))
    return dpo_from_sft(config, plan, shared, pairs, "dpo_negative", n, seed)


def chain_dpo_per_step(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """DPO from the SFT model on per-step pairs at the first pit of its negatives."""
    sample_key = samples(config, plan, shared, n, seed)
    rollout_params = RolloutParams.from_config(config.per_step, config.sampling, config.generation,
                                               config.model, config.task.name, seed)
    rollouts = plan.add(make_spec(config, "rollouts", f"n={n},seed={seed}", rollout_params,
                                  {"model": sft_on_teacher(config, plan, shared, n, seed),
                                   "samples": sample_key}, data_type="dpo_per_step", n=n, seed=seed))
    pairs = plan.add(make_spec(config, "step_pairs", f"n={n},seed={seed}",
                               StepPairsParams.from_config(config.per_step, n),
                               {"rollouts": rollouts, "samples": sample_key, "data": shared["teacher"]},
                               data_type="dpo_per_step", n=n, seed=seed))
    return dpo_from_sft(config, plan, shared, pairs, "dpo_per_step", n, seed)


def chain_sft_human(config: Config, plan: Plan, shared: dict[str, str], n: int, seed: int) -> str:
    """SFT of the base model on the benchmark's own first n training solutions."""
    data = plan.add(make_spec(config, "human_data", f"pool={config.pool_size}",
                              HumanDataParams(dataclasses.replace(config.task, n_test=0),
                                              config.pool_size)))
    params = SFTParams(config.model, config.train.sft, config.train.device, seed, n)
    model = plan.add(make_spec(config, "sft", f"sft_human,n={n},seed={seed}", params,
                               {"base": shared["base"], "data": data},
                               data_type="sft_human", n=n, seed=seed))
    return evaluate(config, plan, model, "sft_human", n, seed)


CHAINS = {
    "sft_teacher": chain_sft_teacher,
    "rft_self": chain_rft_self,
    "dpo_negative": chain_dpo_negative,
    "dpo_per_step": chain_dpo_per_step,
    "sft_human": chain_sft_human,
}
