"""The hf generation backend on a real (tiny, untrained) Llama folder."""

from __future__ import annotations

import pytest

from orchestrator.backends import make_backend
from orchestrator.backends.base import check_request, cut_at_stop
from orchestrator.config import GenerationConfig, ModelConfig
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

PROMPTS = ["Question: Mia has 7 shells.\nAnswer:\n", "Question: Tom has 2 coins and finds 3.\nAnswer:\n",
           "Question: x\nAnswer:\n"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    texts = [p + "7 + 5 = 12\n#### 12" for p in PROMPTS] * 20
    save_tiny_model(texts, TinyLlamaSpec(hidden_size=32, num_layers=1, num_heads=2,
                                         intermediate_size=64), seed=0, out_dir=folder)
    return make_backend(GenerationConfig(batch_size=4), str(folder), ModelConfig())


def test_shapes_and_token_counts(backend):
    out = backend.generate(PROMPTS, n=3, temperature=1.0, max_new_tokens=8, seed=0)
    assert [len(per_prompt) for per_prompt in out] == [3, 3, 3]
    assert all(0 < c.num_tokens <= 8 for per_prompt in out for c in per_prompt)


def test_greedy_is_deterministic_and_independent_of_batching(backend):
    alone = [backend.generate([p], max_new_tokens=10)[0][0].text for p in PROMPTS]
    together = [c[0].text for c in backend.generate(PROMPTS, max_new_tokens=10)]
    assert alone == together


def test_sampling_is_reproducible_by_seed(backend):
    a = backend.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=7)
    b = backend.generate(PROMPTS, n=2, temperature=1.0, max_new_tokens=10, seed=7)
    assert [[c.text for c in x] for x in a] == [[c.text for c in x] for x in b]


def test_stop_strings_cut_the_completion(backend):
    sample = {"n": 1, "temperature": 1.0, "max_new_tokens": 12, "seed": 3}
    full = backend.generate(PROMPTS[:1], **sample)[0][0]
    position = next((i for i, ch in enumerate(full.text) if i > 0 and not ch.isspace()), None)
    assert position is not None, "an untrained model samples more than whitespace"
    stop = full.text[position]
    cut = backend.generate(PROMPTS[:1], stop=[stop], **sample)[0][0]
    assert cut.text == full.text[:full.text.find(stop)] and cut.finished


def test_request_checks():
    with pytest.raises(ValueError, match="greedy decoding"):
        check_request(2, 0.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        check_request(0, 1.0)
    assert cut_at_stop("a\n\nQuestion: b", ["\n\nQuestion:", "zz"]) == ("a", True)
    assert cut_at_stop("abc", ["zz"]) == ("abc", False)


def test_vllm_backend_says_how_to_install_it():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"install the GPU extra"):
        make_backend(GenerationConfig(backend="vllm"), "x", ModelConfig())
