"""The hf generation backend on a real (tiny, untrained) Llama folder."""

from __future__ import annotations

import pytest

from orchestrator.backends import GenerationRequest, make_backend
from orchestrator.backends.base import cut_at_stop
from orchestrator.config import GenerationConfig, ModelLoading
from orchestrator.tiny_model import TinyLlamaSpec, save_tiny_model

PROMPTS = ["Question: Mia has 7 shells.\nAnswer:\n", "Question: Tom has 2 coins and finds 3.\nAnswer:\n",
           "Question: x\nAnswer:\n"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny") / "model"
    texts = [p + "7 + 5 = 12\n#### 12" for p in PROMPTS] * 20
    save_tiny_model(texts, TinyLlamaSpec(hidden_size=32, num_layers=1, num_heads=2,
                                         intermediate_size=64), seed=0, out_dir=folder)
    return make_backend(GenerationConfig(batch_size=4), str(folder), ModelLoading())


def test_shapes_and_token_counts(backend):
    out = backend.generate(PROMPTS, GenerationRequest(n=3, temperature=1.0, max_new_tokens=8))
    assert [len(per_prompt) for per_prompt in out] == [3, 3, 3]
    assert all(0 < c.num_tokens <= 8 for per_prompt in out for c in per_prompt)


def test_greedy_is_deterministic_and_independent_of_batching(backend):
    greedy = GenerationRequest(max_new_tokens=10)
    alone = [backend.generate([p], greedy)[0][0].text for p in PROMPTS]
    together = [c[0].text for c in backend.generate(PROMPTS, greedy)]
    assert alone == together


def test_sampling_is_reproducible_by_seed(backend):
    request = GenerationRequest(n=2, temperature=1.0, max_new_tokens=10, seed=7)
    a = backend.generate(PROMPTS, request)
    b = backend.generate(PROMPTS, request)
    other = backend.generate(PROMPTS, GenerationRequest(n=2, temperature=1.0, max_new_tokens=10,
                                                        seed=8))
    texts = [[c.text for c in x] for x in a]
    assert texts == [[c.text for c in x] for x in b]
    assert texts != [[c.text for c in x] for x in other]


def test_stop_strings_cut_the_completion(backend):
    sample = {"n": 1, "temperature": 1.0, "max_new_tokens": 12, "seed": 3}
    full = backend.generate(PROMPTS[:1], GenerationRequest(**sample))[0][0]
    position = next((i for i, ch in enumerate(full.text) if i > 0 and not ch.isspace()), None)
    assert position is not None, "an untrained model samples more than whitespace"
    stop = full.text[position]
    cut = backend.generate(PROMPTS[:1], GenerationRequest(stop=(stop,), **sample))[0][0]
    assert cut.text == full.text[:full.text.find(stop)] and cut.finished


def test_request_checks():
    with pytest.raises(ValueError, match="greedy decoding"):
        GenerationRequest(n=2, temperature=0.0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        GenerationRequest(n=0, temperature=1.0)
    assert cut_at_stop("a\n\nQuestion: b", ["\n\nQuestion:", "zz"]) == ("a", True)
    assert cut_at_stop("abc", ["zz"]) == ("abc", False)


def test_vllm_backend_says_how_to_install_it():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(RuntimeError, match=r"install the GPU stack"):
        make_backend(GenerationConfig(backend="vllm"), "x", ModelLoading())


def test_generate_and_grade_keeps_each_completion_with_its_prompts_answer():
    from orchestrator.backends import GradingRule, generate_and_grade
    from orchestrator.backends.base import Completion

    class Echo:     # answers "#### <index of the sample>" for every prompt
        def generate(self, prompts, request):
            return [[Completion(f"#### {j}", 2, True) for j in range(request.n)] for _ in prompts]

    graded = generate_and_grade(Echo(), ["p0", "p1", "p2"], ["0", "1", "2"],
                                GenerationRequest(n=3, temperature=1.0), GradingRule("arith"))
    assert [[g.correct for g in per_prompt] for per_prompt in graded] == [
        [True, False, False], [False, True, False], [False, False, True]]
    assert graded[1][1].text == "#### 1" and graded[1][1].grade.extracted == "1"


def test_open_backend_frees_the_model_when_the_block_ends(tmp_path):
    from orchestrator.backends import open_backend

    folder = tmp_path / "model"
    save_tiny_model([p + "#### 1" for p in PROMPTS] * 10, TinyLlamaSpec(
        hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64), seed=0, out_dir=folder)
    with open_backend(GenerationConfig(), str(folder), ModelLoading()) as opened:
        assert opened.model is not None
    assert opened.model is None


@pytest.fixture
def stand_in_vllm(monkeypatch):
    """A stand-in `vllm` module (vLLM cannot be imported on a CPU machine) that records what
    the backend asks of it: the engine's arguments and each generate call's SamplingParams."""
    import sys
    import types

    calls: dict[str, list] = {"engine": [], "generate": [], "deleted": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, **kwargs):
            calls["engine"].append(kwargs)

        def generate(self, prompts, params, use_tqdm=True):
            calls["generate"].append(params)
            out = types.SimpleNamespace(text="#### 1", token_ids=[5, 6], finish_reason="stop")
            return [types.SimpleNamespace(outputs=[out] * p.n) for p in params]

        def __del__(self):
            calls["deleted"].append(True)

    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return calls


def test_vllm_gets_one_seed_per_prompt_and_frees_the_engine(stand_in_vllm):
    from orchestrator.backends.vllm import prompt_seed

    with open_backend_vllm() as backend:
        out = backend.generate(PROMPTS, GenerationRequest(n=2, temperature=0.7, seed=5))
        again = backend.generate(PROMPTS, GenerationRequest(n=2, temperature=0.7, seed=5))
    assert [len(per_prompt) for per_prompt in out] == [2, 2, 2]
    seeds = [p.seed for p in stand_in_vllm["generate"][0]]
    assert len(set(seeds)) == len(PROMPTS)                          # no shared noise across prompts
    assert seeds == [p.seed for p in stand_in_vllm["generate"][1]]  # and the same on every call
    assert seeds == [prompt_seed(5, i) for i in range(len(PROMPTS))]
    assert stand_in_vllm["engine"][0]["enable_prefix_caching"] is True
    assert stand_in_vllm["deleted"] == [True]                       # close() dropped the engine
    assert len(again) == 3


def open_backend_vllm():
    from orchestrator.backends import open_backend

    return open_backend(GenerationConfig(backend="vllm"), "some/model", ModelLoading())
