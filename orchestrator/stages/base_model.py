"""Stage `base_model`: the model every grid cell starts from.

A real model (`model.base` a hub name or path) is not copied: the artifact is a
pointer. The embedded `tiny` model is built here: a tokenizer fitted on the
task's training text, a freshly initialised tiny Llama (`model.init_seed`) and
an optional short "pre-training" on arithmetic documents so the base model is
not blank (as a real pre-trained model would not be). All grid seeds share it,
as all seeds of the paper share DeepSeek-Math-7B.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import ModelConfig, SFTConfig, TaskConfig
from orchestrator.modeling import write_pointer
from orchestrator.tasks import format_prompt, make_task

VERSION = "2"  # 2: the tokenizer is fitted on tokenizer_docs problems (was none)


@dataclass(frozen=True)
class BaseModelParams:
    model: ModelConfig
    task: TaskConfig


@dataclass(frozen=True)
class BaseModelResult:
    model: str
    parameters: int
    pretrain_docs: int
    train_tokens: int
    final_loss: float


def run(params: BaseModelParams, inputs: dict[str, Path], out: Path) -> BaseModelResult:
    cfg = params.model
    if cfg.base != "tiny":
        write_pointer(out, cfg.base)
        return BaseModelResult(cfg.base, 0, 0, 0, float("nan"))
    from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

    # The planner leaves n_train out of this stage's slice (it does not change
    # what is read here: splits are prefix-stable), so ask for exactly the
    # problems the tokenizer is fitted on.
    task = make_task(dataclasses.replace(params.task, n_train=cfg.tokenizer_docs))
    texts = [format_prompt(task.prompt_template, p.question) + p.solution
             for p in task.split("train")[:cfg.tokenizer_docs]]
    if not texts:
        raise RuntimeError("base_model: no training text to fit the tokenizer on")
    spec = TinyLlamaSpec(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                         cfg.intermediate_size, cfg.max_position_embeddings)
    count = save_tiny_model(texts, spec, cfg.init_seed, out / "model")
    if cfg.pretrain_docs == 0:
        return BaseModelResult("tiny", count, 0, 0, float("nan"))
    return _pretrain(cfg, task, out, count)


def _pretrain(cfg: ModelConfig, task, out: Path, count: int) -> BaseModelResult:
    import shutil

    from orchestrator.training import sft_train

    docs = [{"text": d} for d in task.pretraining_corpus(cfg.pretrain_docs)]
    schedule = SFTConfig(epochs=cfg.pretrain_epochs, learning_rate=cfg.pretrain_learning_rate,
                         batch_size=64, max_length=cfg.max_position_embeddings)
    blank = out / "blank"
    shutil.move(out / "model", blank)
    stats = sft_train(str(blank), cfg, docs, schedule, cfg.init_seed, out)
    shutil.rmtree(blank)
    return BaseModelResult("tiny", count, len(docs), stats.train_tokens, stats.final_loss)
