"""Generation backends behind one interface (see base.py).

`make_backend` picks the configured one. vLLM is imported only when asked for:
it is an optional GPU extra and cannot be installed on a CPU machine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchestrator.backends.base import Completion, GenerationBackend

if TYPE_CHECKING:
    from orchestrator.config import GenerationConfig, ModelConfig


def make_backend(cfg: GenerationConfig, model_path: str, model_cfg: ModelConfig) -> GenerationBackend:
    if cfg.backend == "hf":
        from orchestrator.backends.hf import HFBackend

        return HFBackend(model_path, model_cfg, batch_size=cfg.batch_size)
    if cfg.backend == "vllm":
        from orchestrator.backends.vllm import VLLMBackend

        return VLLMBackend(model_path, model_cfg, tensor_parallel_size=cfg.tensor_parallel_size,
                           gpu_memory_utilization=cfg.gpu_memory_utilization)
    raise ValueError(f"unknown generation backend {cfg.backend!r}")


__all__ = ["Completion", "GenerationBackend", "make_backend"]
