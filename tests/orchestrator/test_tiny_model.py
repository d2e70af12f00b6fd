"""The embedded base model: a real tokenizer and a real (tiny) Llama folder."""

from __future__ import annotations

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from orchestrator.config import config_from_dict
from orchestrator.planning import expand_grid
from orchestrator.stages import base_model
from orchestrator.tasks import format_prompt, make_task
from orchestrator.tiny_model import train_tokenizer

TINY = {"model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                  "tokenizer_docs": 500},
        "task": {"n_train": 1000}, "grid": {"sizes": [10]}}


def build(tmp_path, **model):
    raw = {**TINY, "model": {**TINY["model"], **model}}
    config = config_from_dict(raw)
    spec = next(s for s in expand_grid(config).specs if s.stage == "base_model")
    result = base_model.run(spec.params, {}, tmp_path)
    return config, result


def test_base_model_is_an_ordinary_hf_folder_with_a_fitted_tokenizer(tmp_path):
    config, result = build(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert result.parameters == sum(p.numel() for p in model.parameters())
    assert model.config.hidden_size == 32 and not getattr(model.config, "auto_map", None)
    # fitted on the task's text: whole words are tokens, digits are single tokens
    problem = make_task(config.task.source, n_train=0, n_test=1).split("test")[0]
    text = format_prompt(config.task.prompt_template, problem.question) + problem.solution
    tokens = tokenizer.tokenize(text)
    assert tokenizer.unk_token not in tokens
    assert len(tokens) < len(text) / 2
    assert all(len(t.strip("▁")) == 1 for t in tokens if any(c.isdigit() for c in t))
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text
    # newlines are their own tokens: a step boundary is a token boundary
    assert "\n" in tokens


def test_pretraining_runs_and_is_recorded(tmp_path):
    _, result = build(tmp_path, pretrain_docs=64, pretrain_epochs=1.0)
    assert result.pretrain_docs == 64 and result.train_tokens > 0
    assert result.final_loss == result.final_loss         # a number, not NaN
    assert not (tmp_path / "blank").exists()


def test_tokenizer_refuses_empty_text():
    with pytest.raises(ValueError, match="no merges"):
        train_tokenizer([], 128)
