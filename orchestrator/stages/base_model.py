"""Stage `base_model`: the model every grid cell starts from.

A real model (`model.base` a hub name or path) is not copied: the artifact is a
pointer. The embedded `tiny` model is built here: a tokenizer fitted on the
task's training text, a freshly initialised tiny Llama (`model.init_seed`) and
an optional short "pre-training" on arithmetic documents so the base model is
not blank (as a real pre-trained model would not be). All grid seeds share it,
as all seeds of the paper share DeepSeek-Math-7B.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import Config, ModelConfig, SFTSettings
from orchestrator.contract import Files, StageResult
from orchestrator.modeling import write_pointer
from orchestrator.tasks import TaskSource, format_prompt, make_task

VERSION = "2"  # 2: the tokenizer is fitted on tokenizer_docs problems (was none)
INPUTS = ()


@dataclass(frozen=True)
class TinyModelParams:
    """The tiny model: its architecture and pre-training, and the task text it reads."""

    model: ModelConfig
    task: TaskSource


@dataclass(frozen=True)
class HubModelParams:
    """A real model: only its name or path matters (the artifact is a pointer to it)."""

    base: str


BaseModelParams = TinyModelParams | HubModelParams


def from_config(config: Config) -> BaseModelParams:
    if config.model.base == "tiny":
        return TinyModelParams(config.model, config.task.source.without_teacher_style())
    return HubModelParams(config.model.base)


@dataclass(frozen=True)
class BaseModelResult(StageResult):
    model: str
    parameters: int
    pretrain_docs: int
    final_loss: float


def run(params: BaseModelParams, inputs: dict[str, Path], out: Path) -> BaseModelResult:
    if isinstance(params, HubModelParams):
        write_pointer(out, params.base)
        return BaseModelResult(params.base, 0, 0, float("nan"))
    from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

    cfg = params.model
    task = make_task(params.task, n_train=cfg.tokenizer_docs, n_test=0)
    texts = [format_prompt(task.prompt_template, p.question) + p.solution
             for p in task.split("train")[:cfg.tokenizer_docs]]
    if not texts:
        raise RuntimeError("base_model: no training text to fit the tokenizer on")
    spec = TinyLlamaSpec(cfg.vocab_size, cfg.hidden_size, cfg.num_layers, cfg.num_heads,
                         cfg.intermediate_size, cfg.max_position_embeddings)
    count = save_tiny_model(texts, spec, cfg.init_seed, out / Files.MODEL)
    if cfg.pretrain_docs == 0:
        return BaseModelResult("tiny", count, 0, float("nan"))
    return _pretrain(cfg, task, out, count)


def _pretrain(cfg: ModelConfig, task, out: Path, count: int) -> BaseModelResult:
    import shutil

    from orchestrator.training import TrainRun, sft_train

    docs = [{"text": d} for d in task.pretraining_corpus(cfg.pretrain_docs)]
    schedule = SFTSettings(epochs=cfg.pretrain_epochs, learning_rate=cfg.pretrain_learning_rate,
                           batch_size=64, max_length=cfg.max_position_embeddings)
    blank = out / "blank"
    shutil.move(out / Files.MODEL, blank)
    trained = sft_train(TrainRun(str(blank), cfg.loading, schedule, cfg.init_seed), docs, out)
    shutil.rmtree(blank)
    return BaseModelResult("tiny", count, len(docs), trained.final_loss,
                           train_tokens=trained.train_tokens)
