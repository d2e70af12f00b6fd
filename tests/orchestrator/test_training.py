"""TRL training through the project's one entry (`sft_train`, `dpo_train`) on a tiny
Llama built here: what it reports, what it saves, that settings are not mixed up, and
the training method (precision, LoRA, gradient checkpointing; issue 10)."""

from __future__ import annotations

import math
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

import orchestrator.training
from orchestrator.config import (
    DPOSettings,
    LoraSettings,
    ModelConfig,
    ModelLoading,
    SFTSettings,
    TrainMethod,
)
from orchestrator.contract import Files
from orchestrator.memory_plan import lora_parameters, tiny_shape
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model
from orchestrator.training import TrainRun, dpo_train, sft_train

PROMPTS = [f"Question: {a} plus {b}?\nAnswer:\n" for a in range(1, 6) for b in range(1, 5)]
ROWS = [{"prompt": p, "completion": f"#### {i}"} for i, p in enumerate(PROMPTS)]   # 20 rows


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    texts = [r["prompt"] + r["completion"] for r in ROWS] * 5
    save_tiny_model(texts, TinyLlamaSpec(hidden_size=32, num_layers=1, num_heads=2,
                                         intermediate_size=64), seed=0, out_dir=folder)
    return str(folder)


def test_sft_reports_its_work_and_saves_a_loadable_model(base, tmp_path):
    settings = SFTSettings(epochs=2, batch_size=8, learning_rate=1e-2)
    result = sft_train(TrainRun(base, ModelLoading(), settings, seed=0), ROWS, tmp_path)
    assert result.examples == 20 and result.steps == 2 * 3          # ceil(20 / 8) per epoch
    assert result.device == "cpu" and result.final_loss > 0
    assert result.precision == "fp32"                               # auto on a CPU
    from transformers import AutoTokenizer
    tokens = sum(len(AutoTokenizer.from_pretrained(base)(r["prompt"] + r["completion"])["input_ids"])
                 for r in ROWS)
    assert result.train_tokens == 2 * tokens
    assert (tmp_path / Files.MODEL / "config.json").exists()
    assert not (tmp_path / "_trainer").exists()                     # no checkpoints left behind


def test_the_seed_changes_the_run_and_repeats_it(base, tmp_path):
    settings = SFTSettings(epochs=1, batch_size=4, learning_rate=1e-2)
    losses = [sft_train(TrainRun(base, ModelLoading(), settings, seed), ROWS, tmp_path / str(i))
              .final_loss for i, seed in enumerate((0, 0, 1))]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_dpo_trains_on_pairs_from_its_own_start(base, tmp_path):
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "#### 99"} for r in ROWS]
    result = dpo_train(TrainRun(base, ModelLoading(), DPOSettings(epochs=1, batch_size=10), 0),
                       pairs, tmp_path)
    assert result.examples == 20 and result.steps == 2
    assert (tmp_path / Files.MODEL / "config.json").exists()


def test_settings_of_the_other_kind_are_refused(base, tmp_path):
    with pytest.raises(TypeError, match="dpo_train needs DPOSettings"):
        dpo_train(TrainRun(base, ModelLoading(), SFTSettings(), 0), [], tmp_path)


PAIRS = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "#### 99"} for r in ROWS]
SMALL_STEPS = DPOSettings(epochs=1, batch_size=4, learning_rate=1e-6, warmup_ratio=0.0)


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def fraction_changed(before: dict, after: dict, dtype) -> float:
    changed = sum(int((after[k].to(dtype) != before[k].to(dtype)).sum()) for k in before)
    return changed / sum(t.numel() for t in before.values())


@pytest.fixture
def loaded_models(monkeypatch):
    """Every model training loads, with the dtypes its first projection saw in training."""
    import torch

    seen = []
    load = orchestrator.training.load_causal_lm

    def spy(path, config, device):
        model = load(path, config, device)
        record = {"model": model, "weight": [], "output": [], "calls": 0}

        def hook(module, inputs, output):
            record["weight"].append(module.weight.dtype)
            record["output"].append(output.dtype)
            record["calls"] += torch.is_grad_enabled()

        model.model.layers[0].self_attn.q_proj.register_forward_hook(hook)
        seen.append(record)
        return model

    monkeypatch.setattr(orchestrator.training, "load_causal_lm", spy)
    return seen


def test_at_lr_1e_6_bf16_mixed_moves_the_weights_fp32_moves_and_pure_bf16_warns(
        base, tmp_path, loaded_models):
    """Issue 10: pure bf16 weights round AdamW's small updates away; fp32 master weights with
    bf16 autocast (the GPU default) keep them."""
    import torch

    before = weights(Path(base))
    moved = {}
    for precision in ("fp32", "bf16-mixed", "bf16"):
        run = TrainRun(base, ModelLoading(), SMALL_STEPS, 0, method=TrainMethod(precision))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = dpo_train(run, PAIRS, tmp_path / precision)
        assert result.precision == precision and result.steps == 5
        assert any("precision is bf16" in str(w.message) for w in caught) == (precision == "bf16")
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        moved[precision] = fraction_changed(before, weights(tmp_path / precision / Files.MODEL),
                                            dtype)
    assert moved["fp32"] > 0.99
    assert abs(moved["bf16-mixed"] - moved["fp32"]) < 0.01
    assert moved["bf16"] < 0.2
    trained = [m for m in loaded_models if m["calls"]]       # the reference runs no_grad
    assert [(m["weight"][0], m["output"][0]) for m in trained] == [
        (torch.float32, torch.float32),      # fp32
        (torch.float32, torch.bfloat16),     # bf16-mixed: fp32 master weights, CPU autocast
        (torch.bfloat16, torch.bfloat16)]    # bf16
    # DPO's reference is loaded in the maths' dtype
    references = [m for m in loaded_models if not m["calls"]]
    assert [m["weight"][0] for m in references] == [torch.float32, torch.bfloat16, torch.bfloat16]


def test_gradient_checkpointing_recomputes_the_forward(base, tmp_path, loaded_models):
    settings = SFTSettings(epochs=1, batch_size=10, learning_rate=1e-2)
    for on in (False, True):
        sft_train(TrainRun(base, ModelLoading(), settings, 0,
                           method=TrainMethod(gradient_checkpointing=on)), ROWS, tmp_path / str(on))
    assert [m["calls"] for m in loaded_models] == [2, 4]    # 2 steps; each forward again if on


TINY_LORA = TrainMethod(lora=LoraSettings(enabled=True, r=4, alpha=8.0))


def test_lora_sft_then_dpo_train_adapters_and_save_merged_models(base, tmp_path):
    from transformers import AutoModelForCausalLM

    settings = SFTSettings(epochs=2, batch_size=8, learning_rate=1e-2)
    sft = sft_train(TrainRun(base, ModelLoading(), settings, 0, method=TINY_LORA), ROWS,
                    tmp_path / "sft")
    adapters = lora_parameters(tiny_shape(ModelConfig(hidden_size=32, num_layers=1,
                                                      intermediate_size=64)), TINY_LORA.lora)
    assert sft.trainable_parameters == adapters == 2176             # r(in + out) per projection
    sft_model = tmp_path / "sft" / Files.MODEL
    assert not list(sft_model.glob("adapter_*"))                     # a merged, plain model
    start, merged = weights(Path(base)), weights(sft_model)
    assert sorted(start) == sorted(merged)
    changed = {k for k in start if (start[k] != merged[k]).any()}
    assert changed == {k for k in start if k.endswith("proj.weight")}   # only adapted layers
    AutoModelForCausalLM.from_pretrained(sft_model)

    # Two steps, the first a warm-up step at lr 0: both see policy = reference, so the mean
    # DPO loss is exactly log 2 only if the reference is the adapter-free (SFT) model.
    dpo = dpo_train(TrainRun(str(sft_model), ModelLoading(), DPOSettings(epochs=1, batch_size=10),
                             0, method=TINY_LORA), PAIRS, tmp_path / "dpo")
    assert dpo.trainable_parameters == adapters and dpo.steps == 2
    assert dpo.final_loss == pytest.approx(math.log(2), abs=1e-6)
    after = weights(tmp_path / "dpo" / Files.MODEL)
    assert any((after[k] != merged[k]).any() for k in merged)        # the second step moved


LORA_TASK = {"n_train": 300, "n_test": 20, "min_steps": 1, "max_steps": 1, "max_operand": 3,
             "max_value": 6, "ops": ["+"], "restate_sentences": False}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny model fully trained on the task first, standing in for a pre-trained hub model
    (LoRA cannot teach a random tiny model: its embeddings and norms stay frozen)."""
    from orchestrator.config import TaskConfig
    from orchestrator.tasks import format_prompt, make_task

    folder = tmp_path_factory.mktemp("pretrained")
    task = make_task(TaskConfig(**LORA_TASK).source, n_train=300, n_test=0)
    rows = [{"prompt": format_prompt(task.prompt_template, p.question), "completion": p.solution}
            for p in task.split("train")]
    save_tiny_model([r["prompt"] + r["completion"] for r in rows], TinyLlamaSpec(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), 0, folder / "blank")
    sft_train(TrainRun(str(folder / "blank"), ModelLoading(),
                       SFTSettings(epochs=6, batch_size=16, learning_rate=1e-2), 0), rows, folder)
    return folder / Files.MODEL


@pytest.mark.slow
def test_lora_sft_and_dpo_run_through_the_stages_and_the_cache(pretrained, tmp_path):
    """Issue 10: the dpo_negative chain with LoRA SFT and LoRA DPO, through the planner's
    specs and the artifact store; evaluation loads the merged models; a rerun is cached."""
    from orchestrator.config import config_from_dict
    from orchestrator.planning import expand_grid
    from orchestrator.store import ArtifactStore, run_cached

    config = config_from_dict({
        "task": LORA_TASK, "model": {"base": str(pretrained)},
        "train": {"lora": {"enabled": True, "r": 8},
                  "sft": {"epochs": 1, "batch_size": 8, "learning_rate": 1e-2},
                  "dpo": {"epochs": 1, "batch_size": 8}},
        "generation": {"max_new_tokens": 16}, "sampling": {"samples_per_problem": 4},
        "grid": {"data_types": ["dpo_negative"], "sizes": [60]}})
    plan = expand_grid(config)
    store = ArtifactStore(tmp_path)
    for attempt in range(2):
        outcomes = {}
        for spec in plan.specs:
            inputs = {name: outcomes[key].artifact_dir for name, key in spec.inputs}
            outcomes[spec.key] = run_cached(store, spec, inputs)
        by_stage = {o.stage: o for o in outcomes.values()}
        assert all(o.cached for o in outcomes.values()) == (attempt == 1)
    assert set(by_stage) == {"base_model", "teacher_generate", "sft", "sample", "pairs", "dpo",
                             "evaluate"}
    assert by_stage["pairs"].result.pairs >= 10
    for stage in ("sft", "dpo"):
        result = by_stage[stage].result
        assert result.precision == "fp32" and 0 < result.trainable_parameters < 10_000
        model = Path(by_stage[stage].artifact_dir) / Files.MODEL
        assert (model / "model.safetensors").exists() and not list(model.glob("adapter_*"))
    evaluation = by_stage["evaluate"].result
    assert evaluation.n_test == 20
    assert evaluation.test_error < 0.9          # the merged DPO model still solves problems


@pytest.mark.parametrize("mode", ["to_end", "through_pit", "pit_step"])
def test_what_dpo_sees_of_each_rejected_side(base, tmp_path, mode):
    """Token level, through TRL's own preparation: both sides share every token before the
    pit step; the chosen side ends in EOS; the rejected side ends in EOS only for to_end,
    else right after the pit step's newline (through_pit also puts the steps before the
    pit into both sides instead of the prompt)."""
    from orchestrator.credit import per_step_pair
    from orchestrator.training import dpo_trainer

    prompt = "Question: 2 plus 3 plus 4?\nAnswer:\n"
    steps = ["2 + 3 = 5", "5 + 4 = 8", "#### 8"]          # step 2 is the pit
    pair = per_step_pair(prompt, steps, 2, "5 + 4 = 9\n#### 9", mode)
    row = {"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected,
           "rejected_eos": pair.rejected_eos}
    settings = DPOSettings(epochs=1, batch_size=2)
    trainer, loaded, _ = dpo_trainer(TrainRun(base, ModelLoading(), settings, seed=0), [row],
                                     tmp_path)
    tokenizer = loaded.tokenizer
    (example,) = list(trainer.train_dataset)
    chosen, rejected = example["chosen_ids"], example["rejected_ids"]
    assert chosen[-1] == tokenizer.eos_token_id
    assert (rejected[-1] == tokenizer.eos_token_id) == (mode == "to_end")
    prompt_text = tokenizer.decode(example["prompt_ids"])
    rejected_text = tokenizer.decode(rejected, skip_special_tokens=True)
    if mode == "through_pit":
        assert "2 + 3 = 5" not in prompt_text and rejected_text.replace(" ", "") == "2+3=5\n5+4=8\n"
        shared = next(i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b)
        assert tokenizer.decode(chosen[:shared]).replace(" ", "").startswith("2+3=5\n5+4=")
    elif mode == "pit_step":
        assert "2 + 3 = 5" in prompt_text and rejected_text.replace(" ", "") == "5+4=8\n"
    else:
        assert rejected_text.replace(" ", "") == "5+4=8\n####8"


def test_matched_epochs_take_exactly_the_baselines_optimiser_steps(base, tmp_path):
    """rft.match_sft_steps relies on transformers running ceil(epochs x steps per epoch):
    a baseline of 12 examples in batches of 8 takes 2 steps an epoch, 4 in 2 epochs; the 20
    rows take 3 an epoch, so 4/3 epochs, and exactly 4 steps."""
    from orchestrator.stages.sft import matched_epochs

    settings = SFTSettings(epochs=2, batch_size=8, learning_rate=1e-2)
    epochs = matched_epochs(settings, 12, len(ROWS))
    assert epochs == pytest.approx(4 / 3)
    result = sft_train(TrainRun(base, ModelLoading(), replace(settings, epochs=epochs), seed=0),
                       ROWS, tmp_path)
    assert result.steps == 4 and result.examples == 20
