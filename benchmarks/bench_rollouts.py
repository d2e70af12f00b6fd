"""Rollouts: one batched backend call over de-duplicated prefixes (what the
`rollouts` stage does) against one call per negative solution."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Ratio, timed
from orchestrator.backends.hf import HFBackend
from orchestrator.config import ModelConfig, SFTConfig, TaskConfig
from orchestrator.credit import prefix_prompts
from orchestrator.tasks import format_prompt, make_task
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model
from orchestrator.training import sft_train

K = 4


def _model(folder: Path, task) -> str:
    problems = task.split("train")
    texts = [format_prompt(task.prompt_template, p.question) + p.solution for p in problems]
    save_tiny_model(texts, TinyLlamaSpec(), seed=0, out_dir=folder / "base")
    rows = [{"prompt": format_prompt(task.prompt_template, p.question), "completion": p.solution}
            for p in problems[:300]]
    sft_train(str(folder / "base"), ModelConfig(), rows, SFTConfig(epochs=1), 0, folder)
    return str(folder / "model")


def run() -> Ratio:
    task = make_task(TaskConfig(n_train=400, n_test=1, max_steps=4))
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(_model(Path(tmp), task), ModelConfig(), batch_size=128)
        problems = task.split("train")[:40]
        prompts = [format_prompt(task.prompt_template, p.question) for p in problems]
        negatives = [(prompt, [s for s in p.solution.split("\n")])
                     for prompt, p in zip(prompts, problems, strict=True) for _ in range(2)]

        def per_negative():
            for prompt, steps in negatives:
                backend.generate(prefix_prompts(prompt, steps), n=K, temperature=0.7, max_new_tokens=48)

        def batched():
            unique = sorted({p for prompt, steps in negatives for p in prefix_prompts(prompt, steps)})
            backend.generate(unique, n=K, temperature=0.7, max_new_tokens=48)

        base_s, _ = timed(per_negative)
        fast_s, _ = timed(batched)
    prefixes = sum(len(steps) for _, steps in negatives)
    return Ratio("rollouts", "one backend call per negative", "one batched call, shared prefixes once",
                 base_s, fast_s, f"{len(negatives)} negatives, {prefixes} prefixes, K={K}")
