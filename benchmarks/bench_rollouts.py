"""Rollouts: one batched backend call over de-duplicated prefixes (what the
`rollouts` stage does) against one call per negative solution."""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.common import Ratio, timed
from orchestrator.backends import GenerationRequest
from orchestrator.backends.hf import HFBackend
from orchestrator.config import ModelLoading, SFTSettings, TaskConfig
from orchestrator.credit import prefix_prompts
from orchestrator.tasks import format_prompt, make_task
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model
from orchestrator.training import TrainRun, sft_train

K = 4


def _model(folder: Path, task) -> str:
    problems = task.split("train")
    texts = [format_prompt(task.prompt_template, p.question) + p.solution for p in problems]
    save_tiny_model(texts, TinyLlamaSpec(), seed=0, out_dir=folder / "base")
    rows = [{"prompt": format_prompt(task.prompt_template, p.question), "completion": p.solution}
            for p in problems[:300]]
    sft_train(TrainRun(str(folder / "base"), ModelLoading(), SFTSettings(epochs=1), 0), rows, folder)
    return str(folder / "model")


def run() -> Ratio:
    task = make_task(TaskConfig(max_steps=4).source, n_train=400, n_test=0)
    with tempfile.TemporaryDirectory() as tmp:
        backend = HFBackend(_model(Path(tmp), task), ModelLoading(), batch_size=128)
        problems = task.split("train")[:40]
        prompts = [format_prompt(task.prompt_template, p.question) for p in problems]
        negatives = [(prompt, [s for s in p.solution.split("\n")])
                     for prompt, p in zip(prompts, problems, strict=True) for _ in range(2)]

        request = GenerationRequest(n=K, temperature=0.7, max_new_tokens=48)

        def per_negative():
            for prompt, steps in negatives:
                backend.generate(prefix_prompts(prompt, steps), request)

        def batched():
            unique = sorted({p for prompt, steps in negatives for p in prefix_prompts(prompt, steps)})
            backend.generate(unique, request)

        base_s, _ = timed(per_negative)
        fast_s, _ = timed(batched)
    prefixes = sum(len(steps) for _, steps in negatives)
    return Ratio("rollouts", "one backend call per negative", "one batched call, shared prefixes once",
                 base_s, fast_s, f"{len(negatives)} negatives, {prefixes} prefixes, K={K}")
