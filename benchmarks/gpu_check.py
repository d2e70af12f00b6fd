"""`make gpu-check`: the GPU path measured on one GPU in one short call.

Needs CUDA and an installed vLLM (`make install-gpu`), and nothing else: no
model hub, no package registry. The models are randomly initialised Llamas
saved to disk with the project's own tokenizer (fitted on the arith task's
text), so the same code path loads them in `hf`, vLLM and TRL. It prints, and
writes to $OUT/gpu_check.json when OUT is set:

- vLLM engine start time;
- generation tokens/s through the orchestrator's `vllm` backend vs raw
  `vllm.LLM.generate` on the same engine and prompts (goal >= 0.95);
- rollout-shaped prompts (long shared prefixes) with prefix caching on vs off
  (goal >= 2x);
- GPU memory still held after a generation stage's backend is closed (goal ~0);
- the fraction of weights a short DPO at lr 1e-6 moves in bf16-mixed vs fp32
  (goal: the same) and in pure bf16 (the failure the default avoids);
- peak GPU memory of SFT and DPO at a GPU config's batch size and sequence
  length on a model of the config's size, next to the memory plan's estimate.

Budget: under 8 minutes on one H100 (three engine starts dominate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROLLOUT_K = 4
PROMPTS = 256


@dataclass
class Check:
    name: str
    value: float
    unit: str
    goal: str = ""
    note: str = ""

    def line(self) -> str:
        return f"{self.name:<38} {self.value:>12.3f} {self.unit:<10} {self.goal:<10} {self.note}"


# ---------------------------------------------------------------- models and prompts


def task_texts(count: int) -> list[str]:
    """Prompt + solution texts of the embedded task (the tokenizer's training text)."""
    from orchestrator.config import TaskConfig
    from orchestrator.tasks import format_prompt, make_task

    task = make_task(TaskConfig(max_steps=4).source, n_train=count, n_test=0)
    return [format_prompt(task.prompt_template, p.question) + p.solution for p in task.split("train")]


def build_model(folder: Path, hidden: int, layers: int, intermediate: int) -> int:
    """A random Llama of the given shape with the project's tokenizer, saved to `folder`;
    returns its parameter count."""
    from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

    spec = TinyLlamaSpec(vocab_size=512, hidden_size=hidden, num_layers=layers,
                         num_heads=max(1, hidden // 128), intermediate_size=intermediate,
                         max_position_embeddings=4096)
    return save_tiny_model(task_texts(2000), spec, seed=0, out_dir=folder)


def rollout_prompts(count: int) -> list[str]:
    """Rollout-shaped prompts: a long shared few-shot header, a problem, some of its steps."""
    texts = task_texts(count + 8)
    header = "\n\n".join(texts[:8]) * 4 + "\n\n"
    prompts = []
    for text in texts[8:]:
        question, _, solution = text.partition("Answer:\n")
        steps = solution.split("\n")
        prompts.append(header + question + "Answer:\n" + "\n".join(steps[:len(steps) // 2]))
    return prompts


# ---------------------------------------------------------------- the checks


def generation_checks(model: Path) -> list[Check]:
    """Engine start, backend vs raw vLLM throughput, prefix caching, memory after close."""
    import torch
    from vllm import SamplingParams

    from orchestrator.backends import GenerationRequest
    from orchestrator.backends.vllm import VLLMBackend
    from orchestrator.config import ModelLoading

    free_before, _ = torch.cuda.mem_get_info()
    start = time.perf_counter()
    backend = VLLMBackend(str(model), ModelLoading())
    engine_s = time.perf_counter() - start
    prompts = rollout_prompts(PROMPTS)
    request = GenerationRequest(n=ROLLOUT_K, temperature=0.7, max_new_tokens=64, seed=0)
    backend.generate(prompts[:8], request)                     # warm-up
    ours_s, ours = _timed(lambda: backend.generate(prompts, request))
    raw_params = SamplingParams(n=ROLLOUT_K, temperature=0.7, max_tokens=64, seed=0)
    raw_s, raw = _timed(lambda: backend.llm.generate(prompts, raw_params, use_tqdm=False))
    ours_tps = sum(c.num_tokens for per in ours for c in per) / ours_s
    raw_tps = sum(len(o.token_ids) for r in raw for o in r.outputs) / raw_s
    backend.close()
    time.sleep(2)
    held_gb = (free_before - torch.cuda.mem_get_info()[0]) / 2**30

    no_cache_s = _seconds_without_prefix_caching(model, prompts, raw_params)
    return [
        Check("vLLM engine start", engine_s, "s"),
        Check("backend tokens/s / raw vLLM tokens/s", ours_tps / raw_tps, "ratio", ">= 0.95",
              f"{ours_tps:,.0f} vs {raw_tps:,.0f} tokens/s"),
        Check("rollouts: prefix caching on vs off", no_cache_s / raw_s, "speed-up", ">= 2",
              f"{len(prompts)} prompts x K={ROLLOUT_K}, shared few-shot header"),
        Check("GPU memory held after close()", held_gb, "GiB", "~0"),
    ]


def _seconds_without_prefix_caching(model: Path, prompts: list[str], params) -> float:
    """The raw-vLLM timing again on an engine with prefix caching off (freed on return)."""
    from vllm import LLM

    engine = LLM(model=str(model), enable_prefix_caching=False, gpu_memory_utilization=0.85)
    engine.generate(prompts[:8], params, use_tqdm=False)       # warm-up, as for the other
    seconds, _ = _timed(lambda: engine.generate(prompts, params, use_tqdm=False))
    return seconds


def weights_moved(model: Path, precision: str, work: Path, device: str = "cuda") -> float:
    """Fraction of weights a 5-step DPO at lr 1e-6 changes, compared in fp32."""
    from safetensors.torch import load_file

    from orchestrator.config import DPOSettings, ModelLoading, TrainMethod
    from orchestrator.training import TrainRun, dpo_train

    texts = task_texts(40)
    pairs = [{"prompt": t.split("Answer:\n")[0] + "Answer:\n", "chosen": t.split("Answer:\n")[1],
              "rejected": "#### 0"} for t in texts]
    out = work / f"dpo-{precision}"
    out.mkdir()
    run = TrainRun(str(model), ModelLoading(dtype="float32"),
                   DPOSettings(epochs=1, batch_size=8, learning_rate=1e-6, warmup_ratio=0.0),
                   seed=0, device=device, method=TrainMethod(precision=precision))
    dpo_train(run, pairs, out)
    before = load_file(model / "model.safetensors")
    after = load_file(out / "model" / "model.safetensors")
    changed = sum(int((after[k].float() != before[k].float()).sum()) for k in before)
    return changed / sum(t.numel() for t in before.values())


def precision_checks(model: Path, work: Path) -> list[Check]:
    moved = {p: weights_moved(model, p, work) for p in ("fp32", "bf16-mixed", "bf16")}
    return [
        Check("weights moved by DPO, bf16-mixed/fp32", moved["bf16-mixed"] / moved["fp32"], "ratio",
              "~1", f"fp32 {moved['fp32']:.1%}, bf16-mixed {moved['bf16-mixed']:.1%}"),
        Check("weights moved by DPO, pure bf16", moved["bf16"], "fraction", "(low)",
              "why pure bf16 warns"),
    ]


def peak_memory_checks(config_path: Path, work: Path) -> list[Check]:
    """SFT and DPO at the config's batch size and length on a model of the config's size."""
    import torch

    from orchestrator.config import load_config
    from orchestrator.training import TrainRun, dpo_train, sft_train

    config = load_config(config_path)
    # Qwen2.5-Math-1.5B's shape (hidden 1536, 28 layers, MLP 8960) with the project's vocabulary.
    model = work / "sized"
    parameters = build_model(model, 1536, 28, 8960)
    rows = []
    for kind, settings in (("sft", config.train.sft), ("dpo", config.train.dpo)):
        text = "1 + 1 = 2\n" * (settings.max_length // 8)
        examples = settings.batch_size * settings.gradient_accumulation_steps * 3
        run = TrainRun(str(model), config.model.loading,
                       type(settings)(**{**settings.__dict__, "epochs": 1}), seed=0,
                       device="cuda", method=config.train.method)
        torch.cuda.reset_peak_memory_stats()
        if kind == "sft":
            sft_train(run, [{"prompt": "Q:\n", "completion": text}] * examples, work / kind)
        else:
            dpo_train(run, [{"prompt": "Q:\n", "chosen": text, "rejected": text[::-1]}] * examples,
                      work / kind)
        rows.append(Check(f"peak memory, {kind} (batch {settings.batch_size}, "
                          f"length {settings.max_length})",
                          torch.cuda.max_memory_allocated() / 2**30, "GiB", "",
                          f"{config_path.name}, model of {parameters / 1e9:.2f}B params"))
    return rows


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


# ---------------------------------------------------------------- entry


def preflight() -> str | None:
    """Why the check cannot run here, or None."""
    try:
        import torch
    except ImportError:
        return "torch is not installed (make install-gpu)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible: run this on a GPU machine"
    try:
        import vllm  # noqa: F401
    except ImportError:
        return "vLLM is not installed: make install-gpu"
    return None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="experiments/gpu/gsm8k_qwen_math.yaml",
                        help="GPU config whose training batch sizes the peak-memory check uses")
    args = parser.parse_args(argv)
    reason = preflight()
    if reason:
        print(f"gpu-check: {reason}", file=sys.stderr)
        return 2
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    import torch

    checks: list[Check] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = work / "small"
        build_model(small, 512, 8, 1536)
        for part in (lambda: generation_checks(small), lambda: precision_checks(small, work),
                     lambda: peak_memory_checks(Path(args.config), work)):
            for check in part():
                checks.append(check)
                print(check.line(), flush=True)
    device = torch.cuda.get_device_name(0)
    print(f"\n{device}, {time.strftime('%Y-%m-%d')}")
    for check in checks:
        print(check.line())
    if os.environ.get("OUT"):
        record = {"device": device, "date": time.strftime("%Y-%m-%d"),
                  "checks": [check.__dict__ for check in checks]}
        Path(os.environ["OUT"], "gpu_check.json").write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
