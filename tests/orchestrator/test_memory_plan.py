"""The memory plan `plan` prints: numbers checked by hand, the tiny model's exact parameter
count, the verdict against a stage's GPUs, and that planning stays free of torch."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from orchestrator.config import LoraSettings, ModelConfig, config_from_dict
from orchestrator.memory_plan import (
    describe_memory,
    hub_shape,
    lora_parameters,
    memory_plan,
    stage_memory,
    tiny_shape,
    verdict,
)

ROOT = Path(__file__).resolve().parents[2]
ON_ONE_GPU = {"resources": {"sft": {"num_gpus": 1}, "dpo": {"num_gpus": 1}}}


def hub_config(billions: float, train: dict | None = None, cluster: dict | None = None):
    return config_from_dict({"model": {"base": "org/model", "num_parameters": billions},
                             "train": train or {},
                             "cluster": ON_ONE_GPU if cluster is None else cluster,
                             "grid": {"data_types": ["sft_teacher", "dpo_negative"]}})


def test_full_fine_tuning_of_7b_needs_16_bytes_a_parameter_and_does_not_fit_80_gb():
    for precision in ("fp32", "bf16-mixed"):       # fp32 master weights either way
        config = hub_config(7, {"precision": precision})
        memory = stage_memory(config, "sft", hub_shape(7))
        assert memory.weights == memory.gradients == 28e9
        assert memory.optimizer == 56e9                 # AdamW: two fp32 states
        assert memory.weights + memory.gradients + memory.optimizer == 112e9
        assert verdict(config, memory).fits is False
    pure = stage_memory(hub_config(7, {"precision": "bf16"}), "sft", hub_shape(7))
    assert pure.weights + pure.gradients + pure.optimizer == 56e9      # 8 bytes a parameter


def test_with_lora_7b_fits_and_dpo_needs_no_reference_copy():
    full = hub_config(7)                                # auto on a GPU stage: bf16-mixed
    dpo = stage_memory(full, "dpo", hub_shape(7))
    assert dpo.precision == "bf16-mixed" and dpo.reference == 14e9     # frozen: bf16
    lora = hub_config(7, {"lora": {"enabled": True, "r": 16}, "gradient_checkpointing": True})
    for stage in ("sft", "dpo"):
        memory = stage_memory(lora, stage, hub_shape(7))
        adapters = memory.trainable
        assert 0 < adapters < 0.01 * 7e9
        assert memory.weights == 7e9 * 2 + 4 * adapters                 # bf16 base, fp32 adapters
        assert memory.gradients == 4 * adapters and memory.optimizer == 8 * adapters
        assert memory.reference == 0                     # the adapter-free model is the reference
        assert verdict(lora, memory).fits is True


def test_activations_follow_the_stated_formula():
    shape = replace(tiny_shape(ModelConfig()), hidden=100, layers=10, vocab=1000)
    config = config_from_dict({"train": {"precision": "fp32",
                                         "sft": {"batch_size": 2, "max_length": 64},
                                         "dpo": {"batch_size": 2, "max_length": 64}}})
    sft = stage_memory(config, "sft", shape)
    # 128 tokens x (17 values x 100 hidden x 10 layers x 4 bytes + 1000 logits x (4 + 4) bytes)
    assert sft.tokens == 128 and sft.activations == 128 * (17 * 100 * 10 * 4 + 1000 * 8)
    assert stage_memory(config, "dpo", shape).tokens == 256       # chosen and rejected
    checkpointed = replace(config, train=replace(config.train, gradient_checkpointing=True))
    # each layer's input kept, one layer recomputed
    assert stage_memory(checkpointed, "sft", shape).activations == \
        128 * (100 * (10 + 17) * 4 + 1000 * 8)


def test_the_tiny_models_count_is_exact():
    from orchestrator.tiny_model import TinyLlamaSpec, build_tiny_llama, train_tokenizer

    tokenizer = train_tokenizer([f"{a} + {b} = {a + b}" for a in range(30) for b in range(30)], 300)
    spec = TinyLlamaSpec(len(tokenizer), 48, 3, 4, 96)
    model = build_tiny_llama(tokenizer, spec, seed=0)
    config = ModelConfig(vocab_size=len(tokenizer), hidden_size=48, num_layers=3, num_heads=4,
                         intermediate_size=96)
    assert tiny_shape(config).parameters == sum(p.numel() for p in model.parameters())


def test_lora_count_by_hand():
    shape = tiny_shape(ModelConfig(hidden_size=32, num_layers=1, intermediate_size=64))
    # q, k, v, o: 4 x r(32 + 32); gate, up, down: 3 x r(32 + 64)
    assert lora_parameters(shape, LoraSettings(r=4)) == 4 * (4 * 64 + 3 * 96) == 2176
    assert lora_parameters(shape, LoraSettings(r=4, target_modules=("q_proj", "v_proj"))) == 512


def test_verdict_uses_one_gpu_of_the_stage_and_the_hosts_memory_on_cpu():
    memory_on = lambda cluster: stage_memory(hub_config(1, cluster=cluster), "sft",  # noqa: E731
                                             hub_shape(1))
    two = {"resources": {"sft": {"num_gpus": 2}}, "gpu_memory_gb": 40}
    assert verdict(hub_config(1, cluster=two), memory_on(two)).budget == 40e9   # replicated
    half = {"resources": {"sft": {"num_gpus": 0.5}}}
    assert verdict(hub_config(1, cluster=half), memory_on(half)).budget == 40e9
    host = {"resources": {"sft": {"memory_gb": 64}}}
    cpu = verdict(hub_config(1, cluster=host), memory_on(host))
    assert cpu.budget == 64e9 and cpu.where == "host (64 GB)"
    assert memory_on(host).precision == "fp32"            # auto on a CPU stage
    assert verdict(hub_config(1, cluster={}), memory_on({})).fits is None


def test_unknown_hub_size_says_so_and_dpo_only_when_the_grid_has_it():
    unknown = config_from_dict({"model": {"base": "org/model"}})
    assert memory_plan(unknown) == []
    assert "model.num_parameters is 0 (unknown)" in describe_memory(unknown)
    assert [m.stage for m in memory_plan(config_from_dict({}))] == ["sft"]
    assert [m.stage for m in memory_plan(hub_config(1))] == ["sft", "dpo"]


@pytest.mark.parametrize("overrides, verdicts", [
    ((), ["fits", "fits"]),
    (("train.lora.enabled=false",), ["does not fit", "does not fit"]),
])
def test_plan_prints_what_fits_for_the_7b_config(overrides, verdicts):
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan",
                           "experiments/gpu/gsm8k_deepseek_math_7b.yaml", *overrides],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = proc.stdout.split("memory plan per training stage")[1].splitlines()
    rows = [line.strip() for line in table if line.strip().startswith(("sft ", "dpo "))]
    assert [row.split()[0] for row in rows] == ["sft", "dpo"]
    assert [re.search(r"(fits|does not fit) \(\d+%\)$", row).group(1) for row in rows] == verdicts


def test_the_memory_plan_loads_no_heavy_library():
    code = ("import sys; import orchestrator.memory_plan; "
            "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'transformers', 'peft') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
