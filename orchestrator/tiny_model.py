"""The embedded default base model: a tiny Llama with a locally trained tokenizer.

No model hub is reachable from CI, so the embedded world builds its base model
from scratch: a BPE tokenizer trained with `tokenizers` on the task's own text
(digits split one per token, newlines isolated so that steps are token
boundaries), and a randomly initialised `LlamaForCausalLM` of about a million
parameters. Both are saved as an ordinary Hugging Face model folder, so every
later code path (HF generation, TRL, vLLM) loads it exactly like a hub model.

This module must not import ray or mlflow.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


@dataclass(frozen=True)
class TinyLlamaSpec:
    """Architecture of the tiny model (mirrored by `ModelConfig`)."""

    vocab_size: int = 512
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A BPE tokenizer fitted on `texts`, wrapped as a `PreTrainedTokenizerFast`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    # Newlines isolated and digits one per token: arithmetic is learnt digit by
    # digit, and a step boundary is always a token boundary (per-step stages
    # cut prompts at line breaks and must tokenize them the same way).
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
    ])
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        # Every printable ASCII character, so text the model has not seen
        # (another task, a user's prompt) never decodes to <unk>.
        initial_alphabet=sorted(set(string.printable) - set("\t\r\x0b\x0c")),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.get_vocab_size() <= len(SPECIAL_TOKENS) + len(trainer.initial_alphabet):
        raise ValueError("tokenizer: the training text gave no merges (was it empty?)")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS,
                                   padding_side="left", clean_up_tokenization_spaces=False)


def build_tiny_llama(tokenizer, spec: TinyLlamaSpec, seed: int):
    """A freshly initialised Llama sized by `spec`, seeded for reproducibility."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(texts: Iterable[str], spec: TinyLlamaSpec, seed: int, out_dir: Path) -> int:
    """Train the tokenizer, build the model, save both to `out_dir`; returns the parameter count."""
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    model = build_tiny_llama(tokenizer, spec, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())
