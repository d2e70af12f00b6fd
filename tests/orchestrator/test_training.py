"""TRL training through the project's one entry (`sft_train`, `dpo_train`) on a tiny
Llama built here: what it reports, what it saves, and that settings are not mixed up."""

from __future__ import annotations

import pytest

from orchestrator.config import DPOSettings, ModelLoading, SFTSettings
from orchestrator.contract import Files
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model
from orchestrator.training import TrainRun, dpo_train, sft_train

PROMPTS = [f"Question: {a} plus {b}?\nAnswer:\n" for a in range(1, 6) for b in range(1, 5)]
ROWS = [{"prompt": p, "completion": f"#### {i}"} for i, p in enumerate(PROMPTS)]   # 20 rows


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    texts = [r["prompt"] + r["completion"] for r in ROWS] * 5
    save_tiny_model(texts, TinyLlamaSpec(hidden_size=32, num_layers=1, num_heads=2,
                                         intermediate_size=64), seed=0, out_dir=folder)
    return str(folder)


def test_sft_reports_its_work_and_saves_a_loadable_model(base, tmp_path):
    settings = SFTSettings(epochs=2, batch_size=8, learning_rate=1e-2)
    result = sft_train(TrainRun(base, ModelLoading(), settings, seed=0), ROWS, tmp_path)
    assert result.examples == 20 and result.steps == 2 * 3          # ceil(20 / 8) per epoch
    assert result.device == "cpu" and result.final_loss > 0
    from transformers import AutoTokenizer
    tokens = sum(len(AutoTokenizer.from_pretrained(base)(r["prompt"] + r["completion"])["input_ids"])
                 for r in ROWS)
    assert result.train_tokens == 2 * tokens
    assert (tmp_path / Files.MODEL / "config.json").exists()
    assert not (tmp_path / "_trainer").exists()                     # no checkpoints left behind


def test_the_seed_changes_the_run_and_repeats_it(base, tmp_path):
    settings = SFTSettings(epochs=1, batch_size=4, learning_rate=1e-2)
    losses = [sft_train(TrainRun(base, ModelLoading(), settings, seed), ROWS, tmp_path / str(i))
              .final_loss for i, seed in enumerate((0, 0, 1))]
    assert losses[0] == losses[1] and losses[0] != losses[2]


def test_dpo_trains_on_pairs_from_its_own_start(base, tmp_path):
    pairs = [{"prompt": r["prompt"], "chosen": r["completion"], "rejected": "#### 99"} for r in ROWS]
    result = dpo_train(TrainRun(base, ModelLoading(), DPOSettings(epochs=1, batch_size=10), 0),
                       pairs, tmp_path)
    assert result.examples == 20 and result.steps == 2
    assert (tmp_path / Files.MODEL / "config.json").exists()


def test_settings_of_the_other_kind_are_refused(base, tmp_path):
    with pytest.raises(TypeError, match="dpo_train needs DPOSettings"):
        dpo_train(TrainRun(base, ModelLoading(), SFTSettings(), 0), [], tmp_path)
