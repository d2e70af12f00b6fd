"""Loading models and tokenizers the same way in every stage.

A model artifact is either a saved Hugging Face folder (`<artifact>/model`, the
tiny base model and every trained model) or a pointer to a hub/local path
(`<artifact>/pointer.json`, a real base model that is not copied). Everything
that loads a model goes through `model_path`, `load_tokenizer` and
`load_causal_lm`, so `trust_remote_code` and dtype rules live in one place.

This module must not import ray or mlflow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from orchestrator.config import ModelLoading

POINTER = "pointer.json"


def write_pointer(artifact_dir: Path, model: str) -> None:
    (artifact_dir / POINTER).write_text(json.dumps({"model": model}))


def model_path(artifact_dir: Path) -> str:
    """The path or hub name to load the model of a model artifact from."""
    pointer = artifact_dir / POINTER
    if pointer.exists():
        return json.loads(pointer.read_text())["model"]
    return str(artifact_dir / "model")


def pick_device(requested: str = "auto") -> str:
    """'cuda' when asked for or when auto and a GPU is visible (Ray sets CUDA_VISIBLE_DEVICES)."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is visible to this stage "
                           "(give the stage num_gpus in cluster.resources)")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def torch_dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, name)


def set_torch_threads() -> None:
    """Honour the runner's per-stage thread budget (several stages share a CPU)."""
    import torch

    threads = int(os.environ.get("SYNTHSCALE_TORCH_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)


def load_tokenizer(path: str, config: ModelLoading):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    tokenizer.padding_side = "left"   # batched generation appends on the right
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, config: ModelLoading, device: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch_dtype(config.dtype, device), trust_remote_code=config.trust_remote_code)
    return model.to(device)


def free_memory() -> None:
    """Return what a finished model held: Python garbage, then CUDA's cached blocks (a
    Ray worker may run another stage next, and vLLM checks free GPU memory at start)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
