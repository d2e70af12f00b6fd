"""`vllm` backend: the vLLM offline engine, for GPU clusters.

Prefix caching is on: Monte Carlo rollouts share long prefixes (the problem
plus the steps so far), which vLLM then computes once. vLLM is the `[gpu]`
extra and is imported only here, when this backend is built; a CPU install
never has it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from orchestrator.backends.base import Completion, GenerationRequest
from orchestrator.config import ModelLoading
from orchestrator.modeling import free_memory


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed of prompt `index` of a request with seed `seed`: distinct per prompt,
    the same on every run (vLLM gives child j of a prompt seed + j)."""
    digest = hashlib.sha256(f"{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFF_FFFF


class VLLMBackend:
    def __init__(self, model_path: str, model_config: ModelLoading, tensor_parallel_size: int = 1,
                 gpu_memory_utilization: float = 0.85):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise RuntimeError("generation.backend is 'vllm' but vLLM is not installed; install the "
                               "GPU stack (make install-gpu) on a CUDA machine, or use "
                               "generation.backend: hf") from exc
        dtype = "auto" if model_config.dtype == "auto" else model_config.dtype
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True,
                       trust_remote_code=model_config.trust_remote_code, dtype=dtype)

    def generate(self, prompts: Sequence[str], request: GenerationRequest) -> list[list[Completion]]:
        from vllm import SamplingParams

        r = request
        # One SamplingParams per prompt with its own seed: vLLM's sampler noise is a hash of
        # (seed, position), so a seed shared by a batch gives every prompt the same noise and
        # correlates rollouts from different prefixes (and pass@k across problems).
        params = [SamplingParams(n=r.n, temperature=r.temperature,
                                 top_p=r.top_p if r.temperature else 1.0,
                                 max_tokens=r.max_new_tokens, stop=list(r.stop) or None,
                                 seed=prompt_seed(r.seed, i))
                  for i in range(len(prompts))]
        outputs = self.llm.generate(list(prompts), params, use_tqdm=False)
        return [[Completion(o.text, len(o.token_ids), o.finish_reason == "stop") for o in out.outputs]
                for out in outputs]

    def close(self) -> None:
        # vLLM has no public shutdown: dropping the engine and collecting frees it.
        del self.llm
        free_memory()
