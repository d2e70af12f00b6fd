"""Generation backends behind one interface (see base.py), and the one way stages use them.

`open_backend` builds the configured backend and closes it when the stage is
done with it; `generate_and_grade` is the stages' common step: n completions
per prompt, each graded against its problem's answer; `open_openai_backend`
opens a model behind an OpenAI-compatible server (`openai_api.py`), as
`generation.backend: openai` does with the student's folder path as the model
name. vLLM and the
openai client are imported only when asked for: they are optional extras (vLLM
cannot be installed on a CPU machine).

This package must not import ray, mlflow or the stages.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.backends.base import Completion, GenerationBackend, GenerationRequest

if TYPE_CHECKING:
    from orchestrator.backends.openai_api import OpenAIBackend
    from orchestrator.config import GenerationConfig, ModelLoading, OpenAIConfig
    from orchestrator.tasks.grading import Grade


def make_backend(cfg: GenerationConfig, model_path: str, model_cfg: ModelLoading,
                 api: OpenAIConfig | None = None,
                 responses: Path | None = None) -> GenerationBackend:
    """`api` and `responses` (the response cache's folder) are for backend openai."""
    if cfg.backend == "openai":
        from orchestrator.backends.openai_api import OpenAIBackend

        if api is None or not api.base_url:
            raise ValueError("generation.backend is 'openai' but no openai.base_url was given")
        return OpenAIBackend(api, served_name(model_path), responses)
    if cfg.backend == "hf":
        from orchestrator.backends.hf import HFBackend

        return HFBackend(model_path, model_cfg, batch_size=cfg.batch_size)
    if cfg.backend == "vllm":
        from orchestrator.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, model_cfg, tensor_parallel_size=cfg.tensor_parallel_size,
                           gpu_memory_utilization=cfg.gpu_memory_utilization)
    raise ValueError(f"unknown generation backend {cfg.backend!r}")


def served_name(model_path: str) -> str:
    """The model name a server that loads models by path is sent: a local folder as an
    absolute path (the server's working directory is not the stage's), a hub name as is.
    It names the artifact's cache key, so a retrained student never reuses old answers."""
    path = Path(model_path)
    return str(path.resolve()) if path.exists() else model_path


@contextmanager
def open_backend(cfg: GenerationConfig, model_path: str, model_cfg: ModelLoading,
                 api: OpenAIConfig | None = None,
                 responses: Path | None = None) -> Iterator[GenerationBackend]:
    """The configured backend, closed (model and memory freed) when the block ends."""
    backend = make_backend(cfg, model_path, model_cfg, api, responses)
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def open_openai_backend(settings: OpenAIConfig, model: str,
                        cache_dir: Path | None) -> Iterator[OpenAIBackend]:
    """A model behind an OpenAI-compatible server, its responses cached in `cache_dir`."""
    from orchestrator.backends.openai_api import OpenAIBackend

    backend = OpenAIBackend(settings, model, cache_dir)
    try:
        yield backend
    finally:
        backend.close()


@dataclass(frozen=True)
class Graded:
    """One completion and its grade."""

    completion: Completion
    grade: Grade

    @property
    def text(self) -> str:
        return self.completion.text

    @property
    def correct(self) -> bool:
        return self.grade.correct


@dataclass(frozen=True)
class GradingRule:
    """How completions are graded: the task's conventions and the time bound per answer."""

    task: str                  # grading conventions (\\boxed first for math)
    timeout_s: float = 5.0


def generate_and_grade(backend: GenerationBackend, prompts: Sequence[str], answers: Sequence[str],
                       request: GenerationRequest, rule: GradingRule) -> list[list[Graded]]:
    """For each prompt, `request.n` completions graded against that prompt's answer."""
    from orchestrator.tasks.grading import grade_batch

    outputs = backend.generate(prompts, request)
    flat = [(c, answer) for per_prompt, answer in zip(outputs, answers, strict=True)
            for c in per_prompt]
    grades = grade_batch([c.text for c, _ in flat], [a for _, a in flat],
                         timeout_s=rule.timeout_s, task=rule.task)
    graded = [Graded(c, g) for (c, _), g in zip(flat, grades, strict=True)]
    n = request.n
    return [graded[i * n:(i + 1) * n] for i in range(len(prompts))]


__all__ = ["Completion", "GenerationBackend", "GenerationRequest", "Graded", "GradingRule",
           "generate_and_grade", "make_backend", "open_backend", "open_openai_backend"]
