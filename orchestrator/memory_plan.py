"""Memory plan of the training stages: what one GPU must hold for SFT and DPO.

`python -m orchestrator plan` prints it after the stage table, so that a config
says what fits where before any job starts (docs/training.md). It is a rough,
stated estimate, not a measurement: bytes per component from the parameter
count, the precision, LoRA, the optimiser (AdamW), DPO's reference model,
gradient checkpointing and the micro-batch. It leaves out the CUDA context and
allocator fragmentation, hence the margin in `FIT_FRACTION`.

Planning-time code: it must not import torch, ray or mlflow (no model is loaded
and no hub is reachable when planning).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config import Config, LoraSettings, ModelConfig, TrainSettings

FIT_FRACTION = 0.9          # of a GPU's memory: the rest is CUDA context and fragmentation
HUB_VOCAB = 152_000         # Qwen2.5's vocabulary; Llama-2's is 32k, DeepSeek-Math's 102k
HUB_ASPECT = 128            # hidden size / layers of Llama-2-7B, Qwen2.5-7B, DeepSeek-Math-7B
ACTIVATION_VALUES = 17      # values stored per token, layer and hidden unit without
                            # checkpointing (Korthikanti et al. 2022's 34 bytes at 16 bit,
                            # attention scores not stored: SDPA/flash attention)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model; `assumed`: derived from the size alone."""

    parameters: int
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    assumed: bool = False


def tiny_shape(model: ModelConfig) -> ModelShape:
    """The tiny Llama's exact count (tied embeddings; the vocabulary is an upper bound)."""
    h, inter, vocab = model.hidden_size, model.intermediate_size, model.vocab_size
    per_layer = 4 * h * h + 3 * h * inter + 2 * h        # attention, MLP, two RMSNorms
    return ModelShape(vocab * h + model.num_layers * per_layer + h, h, model.num_layers,
                      inter, vocab)


def hub_shape(billions: float) -> ModelShape:
    """A hub model known only by its size: P ~ 12 L h^2 with h / L ~ `HUB_ASPECT`."""
    parameters = int(billions * 1e9)
    hidden = round((parameters * HUB_ASPECT / 12) ** (1 / 3))
    return ModelShape(parameters, hidden, max(1, round(hidden / HUB_ASPECT)),
                      round(8 * hidden / 3), HUB_VOCAB, assumed=True)


def model_shape(model: ModelConfig) -> ModelShape | None:
    """None for a hub model of unknown size (`model.num_parameters` 0)."""
    if model.base == "tiny":
        return tiny_shape(model)
    return hub_shape(model.num_parameters) if model.num_parameters > 0 else None


def lora_parameters(shape: ModelShape, lora: LoraSettings) -> int:
    """r x (inputs + outputs) per adapted projection of a Llama-style layer; a name this
    does not know counts as a hidden x hidden projection."""
    h, inter = shape.hidden, shape.intermediate
    sizes = dict.fromkeys(("q_proj", "k_proj", "v_proj", "o_proj"), 2 * h)
    sizes.update(dict.fromkeys(("gate_proj", "up_proj", "down_proj"), h + inter))
    names = LORA_TARGETS if lora.target_modules == ("all-linear",) else lora.target_modules
    return lora.r * shape.layers * sum(sizes.get(name, 2 * h) for name in names)


@dataclass(frozen=True)
class StageMemory:
    """Bytes one training stage holds at its peak, by component."""

    stage: str
    precision: str
    trainable: int
    tokens: int             # forwarded per micro-batch (DPO: chosen and rejected)
    weights: float
    gradients: float
    optimizer: float
    reference: float        # DPO's frozen model (0 with LoRA: the adapter-free model)
    activations: float

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.reference
                + self.activations)


def stage_device(config: Config, stage: str) -> str:
    resources = getattr(config.cluster.resources, stage)
    if config.train.device != "auto":
        return config.train.device
    return "cuda" if resources.num_gpus > 0 else "cpu"


def stage_memory(config: Config, stage: str, shape: ModelShape) -> StageMemory:
    """`stage`: 'sft' or 'dpo'."""
    settings: TrainSettings = getattr(config.train, stage)
    method = config.train.method
    precision = method.resolved_precision(stage_device(config, stage))
    master = 2 if precision == "bf16" else 4        # bytes of a trained weight
    frozen = 4 if precision == "fp32" else 2        # bytes of a frozen one: the maths' dtype
    tokens = settings.batch_size * settings.max_length * (2 if stage == "dpo" else 1)
    activations = _activation_bytes(shape, tokens, 4 if precision == "fp32" else 2,
                                    method.gradient_checkpointing)
    if method.lora.enabled:         # peft keeps adapters in fp32; AdamW's two states too
        adapters = lora_parameters(shape, method.lora)
        return StageMemory(stage, precision, adapters, tokens,
                           shape.parameters * frozen + 4 * adapters, 4 * adapters,
                           8 * adapters, 0.0, activations)
    reference = shape.parameters * frozen if stage == "dpo" else 0.0
    return StageMemory(stage, precision, shape.parameters, tokens, shape.parameters * master,
                       shape.parameters * master, 2 * shape.parameters * master, reference,
                       activations)


def _activation_bytes(shape: ModelShape, tokens: int, value_bytes: int,
                      checkpointing: bool) -> float:
    """Stored for the backward pass: `ACTIVATION_VALUES` per token, layer and hidden unit,
    or with checkpointing each layer's input plus one layer recomputed; plus the logits
    (in the maths' dtype) and their fp32 copy for the loss."""
    per_token = shape.hidden * (shape.layers + ACTIVATION_VALUES if checkpointing
                                else ACTIVATION_VALUES * shape.layers)
    return tokens * (per_token * value_bytes + shape.vocab * (value_bytes + 4))


def trained_stages(config: Config) -> list[str]:
    """Every grid row trains an SFT model; the DPO rows train on top of it."""
    dpo = any(d.startswith("dpo_") for d in config.grid.data_types)
    return ["sft", "dpo"] if dpo else ["sft"]


def memory_plan(config: Config) -> list[StageMemory]:
    shape = model_shape(config.model)
    if shape is None:
        return []
    return [stage_memory(config, stage, shape) for stage in trained_stages(config)]


@dataclass(frozen=True)
class Verdict:
    """How a stage's estimate compares with what its resources give it."""

    budget: float           # bytes (0: nothing to compare with)
    where: str              # "1 x 80 GB GPU", "host (64 GB)", ...
    fits: bool | None       # None: not checked


def verdict(config: Config, memory: StageMemory) -> Verdict:
    """A stage trains in one process: extra GPUs replicate the model (data parallel), they
    do not shard it, so the budget is one GPU (or the fraction of one a stage asks for)."""
    resources = getattr(config.cluster.resources, memory.stage)
    if stage_device(config, memory.stage) == "cuda":
        gpus = resources.num_gpus or 1.0
        budget = config.cluster.gpu_memory_gb * 1e9 * min(gpus, 1.0)
        where = f"{_count(gpus)} x {_count(config.cluster.gpu_memory_gb)} GB GPU"
    elif resources.memory_gb > 0:
        budget, where = resources.memory_gb * 1e9, f"host ({_count(resources.memory_gb)} GB)"
    else:
        return Verdict(0.0, "host (no memory_gb)", None)
    return Verdict(budget, where, memory.total <= FIT_FRACTION * budget)


def describe_memory(config: Config) -> str:
    """The `plan` command's memory table."""
    shape = model_shape(config.model)
    if shape is None:
        return (f"memory plan: model.num_parameters is 0 (unknown) for {config.model.base}; "
                f"set it in billions (e.g. model.num_parameters=1.54) to see what fits")
    method = config.train.method
    lines = [f"memory plan per training stage (rough; docs/training.md), "
             f"{'LoRA r=' + str(method.lora.r) if method.lora.enabled else 'full fine-tuning'}, "
             f"gradient checkpointing {'on' if method.gradient_checkpointing else 'off'}:",
             "  " + _describe_shape(config.model, shape)]
    header = ("stage", "precision", "trainable", "tokens", "weights", "grads", "optimizer",
              "reference", "activations", "total", "where", "verdict")
    rows = [header] + [_row(config, memory, shape.parameters) for memory in memory_plan(config)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


def _describe_shape(model: ModelConfig, shape: ModelShape) -> str:
    size = f"{model.base}: {_parameters(shape.parameters)} parameters"
    if not shape.assumed:
        return f"{size} (computed from its shape)"
    return (f"{size} (model.num_parameters); shape assumed from the size: hidden {shape.hidden}, "
            f"{shape.layers} layers, vocabulary {shape.vocab // 1000}k")


def _row(config: Config, memory: StageMemory, parameters: int) -> tuple[str, ...]:
    v = verdict(config, memory)
    share = f"{memory.trainable / max(1, parameters):.1%}"
    if v.fits is None:
        result = "not checked"
    else:
        result = f"{'fits' if v.fits else 'does not fit'} ({memory.total / v.budget:.0%})"
    return (memory.stage, memory.precision, f"{_parameters(memory.trainable)} ({share})",
            f"{memory.tokens:,}", _bytes(memory.weights), _bytes(memory.gradients),
            _bytes(memory.optimizer), _bytes(memory.reference) if memory.reference else "-",
            _bytes(memory.activations), _bytes(memory.total), v.where, result)


def _bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def _parameters(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def _count(x: float) -> str:
    return f"{x:g}"
