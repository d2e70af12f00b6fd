"""The experiment schema: one frozen dataclass per YAML section.

An experiment YAML has the sections below; every field has a default and a
help string (`python -m orchestrator sweep --help` lists them all). Loading
rejects unknown keys, wrong types and inconsistent values with one line that
names the file, line and field (see `config_schema`). Dotted overrides
(`grid.seeds=[0,1]`) go through the same validation.

This module must not import torch, ray or mlflow.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from orchestrator.compose import differences, load_composed
from orchestrator.config_checks import check_consistency
from orchestrator.config_schema import (
    ConfigError,
    Where,
    apply_override,
    build_dataclass,
    field_docs,
    knob,
    to_dict,
)
from orchestrator.config_train import (  # noqa: F401 - re-exported: the schema's train section
    PRECISIONS,
    DataParallel,
    DPOSettings,
    LoraSettings,
    SFTSettings,
    TrainConfig,
    TrainMethod,
    TrainSettings,
)
from orchestrator.credit import PIT_RULES, REJECTED_SIDES
from orchestrator.tasks.arith import OPS, STYLES
from orchestrator.tasks.base import DEFAULT_PROMPT_TEMPLATE, TASK_NAMES, TaskSource

# The grid rows; orchestrator/planning/chains.py wires one stage chain per entry.
DATA_TYPES = ("sft_teacher", "rft_self", "dpo_negative", "dpo_per_step", "dpo_nll_only",
              "sft_human")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = knob("demo", "experiment name: the MLflow experiment and the runs/<name>/ folder",
                     nonempty=True)
    output_dir: str = knob("", "where results.csv, the MLflow store and artifacts go "
                               "(default runs/<name>)")
    description: str = knob("", "free text, logged with the sweep")


@dataclass(frozen=True)
class TaskConfig:
    name: Literal[TASK_NAMES] = knob("arith", "benchmark")
    path: str = knob("", "gsm8k/math: local folder with train.jsonl and test.jsonl "
                         "(empty: Hugging Face datasets)")
    n_train: int = knob(20000, "training problems available to the teacher (the pool's upper bound)",
                        min=1)
    n_test: int = knob(300, "test problems evaluated (the first n of the test split)", min=1)
    prompt_template: str = knob(DEFAULT_PROMPT_TEMPLATE, "model input; {question} is replaced")
    seed: int = knob(0, "arith: generator seed (fixes both splits)")
    min_steps: int = knob(2, "arith: fewest reasoning steps per problem", min=1)
    max_steps: int = knob(3, "arith: most reasoning steps per problem", min=1)
    max_operand: int = knob(9, "arith: largest number in a problem statement", min=1)
    max_value: int = knob(30, "arith: largest intermediate value", min=2)
    ops: tuple[Literal[OPS], ...] = knob(("+", "-"), "arith: operations used",
                                                    nonempty=True)
    calculator_annotations: bool = knob(False, "arith: GSM8K's <<a+b=c>> annotations in solutions")
    restate_sentences: bool = knob(True, "arith: each solution step repeats the sentence it comes "
                                         "from, as GSM8K's do ('She finds 5 more: 7 + 5 = 12')")
    teacher_styles: tuple[Literal[STYLES], ...] = knob(
        (), "arith: solution styles the oracle teacher draws one of per problem, equally often "
            "(repeat a style to weight it: [restated, restated, bare]): restated, bare, fused (two "
            "steps on one line), reordered (an additive run in another order), mixed (line by "
            "line); every one is a correct path. Empty: the one text restate_sentences gives")
    strip_calculator_annotations: bool = knob(False, "gsm8k: remove <<...>> from reference solutions")
    levels: tuple[int, ...] = knob((), "math: keep only these difficulty levels (empty: all)")
    subjects: tuple[str, ...] = knob((), "math: keep only these subjects (empty: all)")

    @property
    def source(self) -> TaskSource:
        """The problem-defining fields, for stage slices that state their own split sizes."""
        return TaskSource(**{f.name: getattr(self, f.name) for f in fields(TaskSource)})


@dataclass(frozen=True)
class ModelLoading:
    """How a model folder is loaded: the part of `model` every stage that reads a trained
    model needs (their cache keys then ignore the tiny model's architecture knobs)."""

    trust_remote_code: bool = False
    dtype: str = "auto"


@dataclass(frozen=True)
class ModelConfig:
    base: str = knob("tiny", "'tiny' (built here from scratch) or a Hugging Face model path/name")
    trust_remote_code: bool = knob(False, "let transformers run code shipped with the model")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = knob(
        "auto", "inference weights dtype (evaluation, sampling, teacher) and the dtype trained "
                "models are saved in (auto: bfloat16 on GPU, float32 on CPU); training itself "
                "follows train.precision")
    num_parameters: float = knob(0.0, "a hub model's size in billions of parameters, for the "
                                      "memory plan `plan` prints (0: unknown, no plan; the tiny "
                                      "model's is computed from its shape)", min=0.0)
    init_seed: int = knob(0, "tiny: weight-init seed of the base model (shared by all grid cells)")
    vocab_size: int = knob(512, "tiny: BPE vocabulary size (upper bound)", min=64)
    hidden_size: int = knob(128, "tiny: hidden size", min=8)
    num_layers: int = knob(4, "tiny: transformer layers", min=1)
    num_heads: int = knob(4, "tiny: attention heads", min=1)
    intermediate_size: int = knob(384, "tiny: MLP width", min=8)
    max_position_embeddings: int = knob(256, "tiny: context length", min=32)
    tokenizer_docs: int = knob(4000, "tiny: training problems the tokenizer is fitted on", min=1)
    pretrain_docs: int = knob(0, "tiny: documents of arithmetic 'pre-training' (equation chains "
                                 "and unlabelled questions; 0 = none)", min=0)
    pretrain_epochs: float = knob(1.0, "tiny: pre-training epochs", min=0.0)
    pretrain_learning_rate: float = knob(3e-3, "tiny: pre-training learning rate", min=0.0)

    @property
    def loading(self) -> ModelLoading:
        return ModelLoading(self.trust_remote_code, self.dtype)


@dataclass(frozen=True)
class TeacherConfig:
    kind: Literal["oracle", "model", "openai"] = knob(
        "oracle", "oracle: the task's exact solver (arith only); model: a model through the "
                  "generation backend, answer-filtered; openai: a model behind an "
                  "OpenAI-compatible server (section `openai`), answer-filtered")
    pool_size: int = knob(0, "problems in the synthetic pool D_syn (0: the largest grid size); set it "
                             "above the largest size you will ever run, and adding sizes later "
                             "reuses every finished stage", min=0)
    model: str = knob("", "kind=model: Hugging Face model path/name of the teacher; "
                          "kind=openai: the model name the server knows")
    samples_per_problem: int = knob(4, "kind=model/openai: attempts per problem to find a correct solution",
                                    min=1)
    temperature: float = knob(0.7, "kind=model/openai: sampling temperature", min=0.0)
    max_new_tokens: int = knob(256, "kind=model/openai: longest solution", min=1)
    chat_template: Literal["auto", "on", "off"] = knob(
        "auto", "kind=model: wrap each prompt in the teacher tokenizer's chat template (auto: when "
                "it has one, as instruction-tuned teachers expect)")
    pilot_min_accuracy: float = knob(
        0.0, "kind=model/openai: the first chunk of problems is a pilot; stop before paying for the rest "
             "when its verified fraction is below this, or too low to fill the pool from "
             "task.n_train problems", min=0.0, max=1.0)


@dataclass(frozen=True)
class GenerationConfig:
    backend: Literal["hf", "vllm", "openai"] = knob(
        "hf", "hf: batched transformers generate (CPU/GPU); vllm: vLLM offline engine (GPU, [gpu] "
              "extra); openai: a server that loads each student by its folder path (`transformers "
              "serve`), set in section openai")
    batch_size: int = knob(128, "prompts per forward batch (hf)", min=1)
    max_new_tokens: int = knob(64, "longest completion for evaluation and self-sampling", min=1)
    stop: tuple[str, ...] = knob((), "extra stop strings (EOS always stops)")
    tensor_parallel_size: int = knob(1, "vllm: GPUs per engine", min=1)
    gpu_memory_utilization: float = knob(0.85, "vllm: fraction of GPU memory", min=0.05, max=1.0)


@dataclass(frozen=True)
class OpenAIConfig:
    """An OpenAI-compatible server (`vllm serve`, `transformers serve`, a hosted API) for
    `teacher.kind: openai` and `generation.backend: openai`. The key itself is never
    configured, logged or hashed: only the name of the variable that holds it."""

    base_url: str = knob("", "the server's API root, e.g. http://127.0.0.1:8000/v1")
    endpoint: Literal["completions", "chat"] = knob(
        "completions", "completions: the prompt as text; chat: the prompt as one user message "
                       "(the server applies the model's chat template)")
    api_key_env: str = knob("OPENAI_API_KEY", "name of the environment variable holding the API "
                                              "key (a local server accepts any value)",
                            nonempty=True)
    max_concurrency: int = knob(8, "requests in flight at once", min=1)
    max_retries: int = knob(8, "retries of a request answered 429, 408, 409 or 5xx, or timed "
                               "out (exponential backoff, or the server's Retry-After)", min=0)
    timeout_s: float = knob(120.0, "time bound for one request", min=1.0)


@dataclass(frozen=True)
class EvalConfig:
    pass_k: int = knob(0, "also report sampled pass@k for this k (0: greedy pass@1 only)", min=0)
    pass_k_samples: int = knob(0, "samples per problem for pass@k (0: k); the unbiased estimator "
                                   "of Chen et al. 2021", min=0)
    temperature: float = knob(0.7, "sampling temperature for pass@k", min=0.0)
    grade_timeout_s: float = knob(5.0, "time bound for grading one answer", min=0.1)


@dataclass(frozen=True)
class SamplingConfig:
    samples_per_problem: int = knob(4, "M: solutions the SFT model samples per training problem "
                                       "(shared by rft_self, dpo_negative, dpo_per_step)", min=1)
    temperature: float = knob(0.7, "sampling temperature", min=0.01)
    top_p: float = knob(1.0, "nucleus sampling", min=0.01, max=1.0)


@dataclass(frozen=True)
class RFTConfig:
    max_per_problem: int = knob(4, "most distinct correct self-samples kept per problem", min=1)
    dedup: Literal["steps", "exact"] = knob(
        "steps", "steps: two samples are duplicates when their normalised step lists (equations, "
                 "numbers, spacing) match; exact: identical text only")
    include_teacher_data: bool = knob(True, "also train on the n teacher solutions (D_syn union the "
                                            "self-generated positives)")
    match_sft_steps: bool = knob(False, "train rft_self for as many optimiser steps as its "
                                        "sft_teacher baseline at the same n (epochs scaled by "
                                        "n / RFT examples); off: the same epochs, so more data "
                                        "means more steps (results.csv: train_steps)")


@dataclass(frozen=True)
class PairsConfig:
    max_pairs_per_problem: int = knob(2, "dpo_negative: most (correct, incorrect) pairs per problem",
                                      min=1)


@dataclass(frozen=True)
class PerStepConfig:
    rollouts: int = knob(4, "K: Monte Carlo rollouts from each step prefix", min=1)
    temperature: float = knob(0.7, "rollout sampling temperature", min=0.01)
    negatives_per_problem: int = knob(4, "most incorrect self-samples per problem sent to rollouts",
                                      min=1)
    pit_rule: Literal[PIT_RULES] = knob(
        "first_zero", "first_zero: the first step after which no rollout succeeds (Self-Explore's "
                      "first pit); min_advantage: the step with the lowest advantage")
    max_pairs_per_problem: int = knob(2, "most per-step pairs per problem", min=1)
    early_stop: bool = knob(False, "roll out prefix by prefix and stop a negative at its first "
                                   "prefix from which no rollout succeeds: the same first_zero "
                                   "pit for fewer rollouts (spend the saving on rollouts K)")
    rejected: Literal[REJECTED_SIDES] = knob(
        "through_pit", "the per-step pair's rejected side: through_pit: the negative truncated "
                       "after the pit step, no EOS, both sides starting after the bare problem "
                       "(Setlur et al. 2024); pit_step: the pit step alone, no EOS "
                       "(Self-Explore); to_end: the negative from the pit to its answer, with "
                       "EOS (this tool's behaviour before the knob). docs/data_types.md")


@dataclass(frozen=True)
class GridConfig:
    data_types: tuple[Literal[DATA_TYPES], ...] = knob(("sft_teacher",), "grid rows: kinds of "
                                                       "synthetic data", nonempty=True)
    sizes: tuple[int, ...] = knob((250, 500, 1000, 2000), "synthetic data sizes n (problems)",
                                  min=1, nonempty=True)
    seeds: tuple[int, ...] = knob((0,), "seeds: change data order, sampling and SFT/DPO init",
                                  min=0, nonempty=True)


@dataclass(frozen=True)
class AnalysisConfig:
    enabled: bool = knob(True, "fit scaling laws at the end of the sweep (analysis/), log to MLflow")
    baseline: str = knob("sft_teacher", "the data type efficiency multipliers are measured against")
    n_boot: int = knob(1000, "bootstrap resamples for confidence intervals", min=0)
    level: float = knob(0.95, "confidence level of the intervals", min=0.5, max=0.999)
    live_every_s: float = knob(60.0, "while the sweep runs, refit after a cell finishes at most "
                                     "this often and log the fits to its MLflow run (step: "
                                     "finished cells; 0: off)", min=0.0)
    live_n_boot: int = knob(100, "bootstrap resamples of the live fits (the final fit uses "
                                 "n_boot)", min=0)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str = knob("", "MLflow tracking URI (empty: MLFLOW_TRACKING_URI if set, else "
                        "sqlite:///<output_dir>/mlflow.db)")
    experiment: str = knob("", "MLflow experiment name (default experiment.name)")
    log_artifacts: bool = knob(True, "log evaluation JSONL and plots as MLflow artifacts")
    artifact_location: str = knob("", "where a new MLflow experiment keeps its artifacts, e.g. "
                                      "s3://bucket/mlflow (empty: the server's default, or "
                                      "<output_dir>/mlartifacts with a local store)")


@dataclass(frozen=True)
class StageResources:
    num_cpus: float = knob(1.0, "CPUs Ray reserves for one such stage (also its torch threads)",
                           min=0.0)
    num_gpus: float = knob(0.0, "GPUs Ray reserves for one such stage", min=0.0)
    memory_gb: float = knob(0.0, "memory Ray reserves (0: no reservation)", min=0.0)
    custom_resource: str = knob("", "a custom node resource the stage needs (one a node offers with "
                                    "`ray start --resources='{\"trainer\": 1}'`): the stage runs "
                                    "only on such nodes (empty: none)")
    custom_amount: float = knob(1.0, "how much of custom_resource one such stage reserves",
                                min=0.0)

    @property
    def memory_bytes(self) -> int:
        """memory_gb as Ray's `memory` resource counts it (bytes; 0: no reservation)."""
        return int(self.memory_gb * 2**30)


@dataclass(frozen=True)
class ResourcesConfig:
    base_model: StageResources = knob(StageResources(), "building/pre-training the base model")
    teacher_generate: StageResources = knob(StageResources(), "writing the synthetic pool")
    sft: StageResources = knob(StageResources(), "SFT training")
    dpo: StageResources = knob(StageResources(), "DPO training")
    sample: StageResources = knob(StageResources(), "self-sampling from the SFT model")
    rollouts: StageResources = knob(StageResources(), "Monte Carlo rollouts per step prefix")
    prepare: StageResources = knob(StageResources(), "building datasets and pairs from samples")
    evaluate: StageResources = knob(StageResources(), "test-set evaluation")


@dataclass(frozen=True)
class ClusterConfig:
    address: str = knob("", "Ray address (empty: RAY_ADDRESS, else a local Ray on this machine)")
    num_cpus: int = knob(0, "local Ray only: CPUs to use (0: all)", min=0)
    num_gpus: int = knob(0, "local Ray only: GPUs to offer (0: those Ray detects)", min=0)
    max_retries: int = knob(2, "retries of a stage whose worker or node died", min=0)
    retry_exceptions: bool = knob(False, "also retry stages that raised (flaky storage, OOM)")
    fail_fast: bool = knob(False, "stop the sweep at the first failed stage: cancel the stages "
                                  "queued or running (finished ones stay cached), exit 1 "
                                  "(`sweep --fail-fast`; default: independent cells go on)")
    strict_cache: bool = knob(False, "recompute cached stages whose spec.json names other versions"
                                     " of torch, transformers, trl, vllm or ray than this sweep's"
                                     " (default: reuse them, with a warning)")
    artifacts: str = knob("", "stage artifact store shared by sweeps (default <output_dir>/artifacts;"
                              " on a cluster a path every node sees, or an object store URL such"
                              " as s3://bucket/prefix, credentials from the environment)")
    artifact_cache: str = knob("", "object store only: the local folder each node downloads "
                                   "artifacts into (empty: $SYNTHSCALE_ARTIFACT_CACHE, else "
                                   "~/.cache/synthscale/artifacts/<hash of the URL>)")
    resources: ResourcesConfig = knob(ResourcesConfig(), "per-stage resource requests")
    gpu_memory_gb: float = knob(80.0, "memory of one GPU, for the memory plan `plan` prints",
                                min=1.0)


@dataclass(frozen=True)
class Config:
    experiment: ExperimentConfig = knob(ExperimentConfig(), "what this experiment is")
    task: TaskConfig = knob(TaskConfig(), "benchmark and its difficulty knobs")
    model: ModelConfig = knob(ModelConfig(), "base model")
    teacher: TeacherConfig = knob(TeacherConfig(), "who writes the synthetic data")
    generation: GenerationConfig = knob(GenerationConfig(), "generation backend")
    openai: OpenAIConfig = knob(OpenAIConfig(), "OpenAI-compatible server (teacher.kind: openai)")
    train: TrainConfig = knob(TrainConfig(), "training hyper-parameters")
    eval: EvalConfig = knob(EvalConfig(), "evaluation")
    sampling: SamplingConfig = knob(SamplingConfig(), "self-generated samples from the SFT model")
    rft: RFTConfig = knob(RFTConfig(), "rft_self: rejection fine-tuning data")
    pairs: PairsConfig = knob(PairsConfig(), "dpo_negative: outcome-level preference pairs")
    per_step: PerStepConfig = knob(PerStepConfig(), "dpo_per_step: rollouts, first pit, pairs")
    grid: GridConfig = knob(GridConfig(), "the sweep: data types x sizes x seeds")
    analysis: AnalysisConfig = knob(AnalysisConfig(), "scaling-law fits after the sweep")
    tracking: TrackingConfig = knob(TrackingConfig(), "MLflow")
    cluster: ClusterConfig = knob(ClusterConfig(), "Ray cluster and resources")

    # Derived locations; all relative paths are relative to the working directory.
    @property
    def output_dir(self) -> Path:
        return Path(self.experiment.output_dir or f"runs/{self.experiment.name}")

    @property
    def artifacts_root(self) -> str:
        """The artifact store as orchestrator.store.open_store takes it: a folder or a URL."""
        return self.cluster.artifacts or str(self.output_dir / "artifacts")

    @property
    def artifacts_dir(self) -> Path:
        """The artifact store's folder (a local store; file:// URLs are folders)."""
        return Path(self.artifacts_root.removeprefix("file://"))

    @property
    def pool_size(self) -> int:
        return self.teacher.pool_size or max(self.grid.sizes)

    @property
    def generation_api(self) -> OpenAIConfig:
        """The server the students generate through: section openai with generation.backend
        openai, else the neutral default, which leaves the generating stages' keys alone."""
        return self.openai if self.generation.backend == "openai" else OpenAIConfig()

    @property
    def tracking_uri(self) -> str:
        # MLflow's own variable, as cluster.address falls back to RAY_ADDRESS: a team's
        # shared server set once in the environment reaches every sweep.
        return (self.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI", "")
                or f"sqlite:///{(self.output_dir / 'mlflow.db').resolve()}")

    @property
    def tracking_uri_shown(self) -> str:
        """tracking_uri for messages: a password in it (user:token@host, common in an
        environment variable) is not printed."""
        return re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", self.tracking_uri)

    @property
    def mlflow_experiment(self) -> str:
        return self.tracking.experiment or self.experiment.name


# ---------------------------------------------------------------- loading
# (cross-field rules: orchestrator/config_checks.py)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read (with its `base:` files merged underneath), override and validate an experiment
    YAML; raises ConfigError (one line)."""
    raw, where = load_composed(Path(path))
    for text in overrides:
        apply_override(raw, text, where)
    config = build_dataclass(Config, raw, "", where)
    check_consistency(config, where)
    return config


def config_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate an in-memory mapping (tests, notebooks)."""
    where = Where(source)
    config = build_dataclass(Config, raw, "", where)
    check_consistency(config, where)
    return config


def config_help() -> str:
    """Every field with its default and help text, for --help and the docs."""
    rows = field_docs(Config)
    width = max(len(key) for key, _, _ in rows)
    return "\n".join(f"  {key:<{width}}  {help_} (default: {default})" for key, default, help_ in rows)


def config_reference() -> str:
    """docs/config.md: every section and field, generated from the dataclasses."""
    lines = ["# Configuration reference", "",
             "Generated from the config dataclasses (`python -m orchestrator config-docs`); "
             "every key can be set in an experiment YAML or overridden on the command line "
             "as `section.key=value`. A YAML may start from others: `base: demo.yaml` (or a list) "
             "merges those files first, then the file's own keys, then the overrides "
             "(mappings merge, lists replace; paths relative to the including file).", ""]
    section = None
    for key, default, help_ in field_docs(Config):
        head = key.split(".")[0]
        if head != section:
            section = head
            lines += ["", f"## `{section}`", "", "| key | default | meaning |", "|---|---|---|"]
        lines.append(f"| `{key}` | `{default}` | {help_.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def config_dict(config: Config) -> dict[str, Any]:
    """The whole config as plain data (for logging and hashing)."""
    return to_dict(config)


def describe_changes(config: Config) -> str:
    """What `plan` prints first: every key whose resolved value is not its default."""
    changed = differences(config_dict(Config()), config_dict(config))
    lines = [f"  {key} = {json.dumps(value)}   (default {json.dumps(default)})"
             for key, default, value in changed]
    return "\n".join(["config (resolved; keys that differ from the defaults):", *lines])


__all__ = ["Config", "ConfigError", "DATA_TYPES", "config_dict", "config_from_dict", "config_help",
           "load_config"]
