"""`hf` backend: batched `transformers` generation on CPU or CUDA.

Prompts are sorted by length and batched with left padding (so every sequence
of a batch ends where generation starts) and decoded with the KV cache. Each
call seeds torch once, so a call is reproducible for the same prompts, batch
size and seed.

This module must not import ray or mlflow.
"""

from __future__ import annotations

from collections.abc import Sequence

from orchestrator.backends.base import Completion, GenerationRequest, cut_at_stop
from orchestrator.config import ModelLoading
from orchestrator.modeling import (
    free_memory,
    load_causal_lm,
    load_tokenizer,
    pick_device,
    set_torch_threads,
)


class HFBackend:
    def __init__(self, model_path: str, model_config: ModelLoading, batch_size: int = 64,
                 device: str = "auto"):
        set_torch_threads()
        self.device = pick_device(device)
        self.tokenizer = load_tokenizer(model_path, model_config)
        self.model = load_causal_lm(model_path, model_config, self.device).eval()
        self.batch_size = batch_size

    def generate(self, prompts: Sequence[str], request: GenerationRequest) -> list[list[Completion]]:
        import torch

        torch.manual_seed(request.seed)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_batch = max(1, self.batch_size // request.n)  # batch_size counts sequences, not prompts
        out: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            batch = self._generate_batch([prompts[i] for i in idx], request)
            for i, completions in zip(idx, batch, strict=True):
                out[i] = completions
        return out

    def close(self) -> None:
        self.model = None
        free_memory()

    def _generate_batch(self, prompts: list[str], request: GenerationRequest):
        import torch

        n = request.n
        enc = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.device)
        sampling = {"do_sample": True, "temperature": request.temperature, "top_p": request.top_p} \
            if request.temperature > 0 else {"do_sample": False}
        with torch.inference_mode():
            output = self.model.generate(
                **enc, max_new_tokens=request.max_new_tokens, num_return_sequences=n,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
                **sampling)
        new_tokens = output[:, enc["input_ids"].shape[1]:].tolist()
        completions = [self._completion(ids, request.stop) for ids in new_tokens]
        return [completions[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _completion(self, ids: list[int], stop: Sequence[str]) -> Completion:
        eos = self.tokenizer.eos_token_id
        ended = eos in ids
        ids = ids[:ids.index(eos)] if ended else ids
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, stopped = cut_at_stop(text, stop)
        if stopped:
            # count only the tokens up to the stop string
            return Completion(text, len(self.tokenizer(text, add_special_tokens=False)["input_ids"]),
                              True)
        return Completion(text, len(ids) + int(ended), ended)
