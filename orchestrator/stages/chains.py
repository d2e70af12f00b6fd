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
from orchestrator.stages.evaluate import EvalParams
from orchestrator.stages.sft import SFTParams
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


CHAINS = {
    "sft_teacher": chain_sft_teacher,
}
