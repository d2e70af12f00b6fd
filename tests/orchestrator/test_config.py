"""Config loading: every shipped YAML validates; bad input is one line, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, config_help, load_config

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").rglob("*.yaml"))


def test_there_are_shipped_experiments():
    names = {p.name for p in EXPERIMENTS}
    assert {"smoke.yaml", "demo.yaml"} <= names


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_validates(path):
    config = load_config(path)
    assert config.experiment.name
    text = path.read_text()
    # STYLE.md: every shipped YAML opens with a comment block naming its command.
    assert text.startswith("#"), f"{path.name} must start with a comment block"
    assert "make sweep CONFIG=" in text.split("\n\n")[0] or "python -m orchestrator" in text


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("grid:\n  sizes: [100, 200, \"1k\"]\n", "exp.yaml:2: grid.sizes[2]: expected int >= 1, got '1k'"),
    ("grid:\n  sizes: [200, 100]\n", "grid.sizes[1]: expected strictly increasing values"),
    ("train:\n  sft:\n    lr: 0.1\n", "exp.yaml:3: train.sft.lr: unknown field"),
    ("grid:\n  data_types: [sft_teacher, rft]\n", "grid.data_types[1]: expected one of"),
    ("bogus: 1\n", "exp.yaml:1: bogus: unknown field"),
    ("task:\n  name: gsm8k\n", "teacher.kind: the oracle teacher exists only for task 'arith'"),
    ("grid:\n  sizes: [10, 30000]\n", "grid.sizes: a pool of 30000 exceeds task.n_train"),
    ("model:\n  dtype: float8\n", "model.dtype: expected one of"),
    ("grid: [1, 2]\n", "grid: expected a mapping of fields"),
    ("grid:\n  seeds: [0, 0]\n", "grid.seeds: expected distinct seeds"),
    ("task: {n_test: true}\n", "task.n_test: expected int >= 1, got True"),
    ("a: [1,\n", "not valid YAML"),
    ("train:\n  sft:\n    warmup_ratio: 1.0\n",
     "exp.yaml:3: train.sft.warmup_ratio: expected number >= 0.0 and < 1.0, got 1.0"),
])
def test_bad_config_is_one_clear_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_override_errors_name_the_override(tmp_path):
    path = write(tmp_path, "grid:\n  sizes: [10, 20]\n")
    with pytest.raises(ConfigError, match=r"override 'grid.seeds=\[0,-1\]': grid.seeds\[1\]"):
        load_config(path, ["grid.seeds=[0,-1]"])
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        load_config(path, ["grid.seeds"])


def test_overrides_go_through_validation_and_apply(tmp_path):
    path = write(tmp_path, "grid:\n  sizes: [10, 20]\n")
    config = load_config(path, ["grid.seeds=[0,1]", "train.sft.epochs=2", "task.ops=['+']"])
    assert config.grid.seeds == (0, 1)
    assert config.train.sft.epochs == 2.0
    assert config.task.ops == ("+",)


def test_yaml_is_loaded_safely(tmp_path):
    path = write(tmp_path, "experiment:\n  name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_help_lists_every_field_with_its_help():
    text = config_help()
    assert "grid.sizes" in text and "synthetic data sizes" in text
    assert "train.sft.learning_rate" in text


def test_cli_exits_2_with_one_line_on_bad_config(tmp_path):
    path = write(tmp_path, "grid:\n  sizes: [1, nope]\n")
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}:2: grid.sizes[1]: expected int >= 1, got 'nope'"


def test_scientific_notation_floats_are_numbers(tmp_path):
    # PyYAML (YAML 1.1) would hand these over as strings.
    path = write(tmp_path, "train:\n  sft:\n    learning_rate: 5e-3\n  dpo:\n    learning_rate: 1E-4\n")
    config = load_config(path, ["train.sft.weight_decay=1e-2"])
    assert config.train.sft.learning_rate == 5e-3
    assert config.train.dpo.learning_rate == 1e-4
    assert config.train.sft.weight_decay == 1e-2
    with pytest.raises(ConfigError, match="expected int"):
        load_config(path, ["grid.sizes=[1e3]"])


def test_config_reference_in_docs_is_current():
    from orchestrator.config import config_reference

    assert (ROOT / "docs" / "config.md").read_text() == config_reference(), \
        "docs/config.md is stale: python -m orchestrator config-docs > docs/config.md"


VLLM_ON_GPUS = ("generation:\n  backend: vllm\ncluster:\n  resources:\n"
                "    sample: {num_gpus: 1}\n    rollouts: {num_gpus: 1}\n    evaluate: {num_gpus: 1}\n")


@pytest.mark.parametrize("text, message", [
    ("generation:\n  stop: ['\\n\\n', '']\n", "generation.stop: an empty stop string"),
    ("sampling:\n  temperature: 2.5\n", "sampling.temperature: expected <= 2"),
    ("per_step:\n  temperature: 3.0\n", "per_step.temperature: expected <= 2"),
    ("generation:\n  backend: vllm\n", "cluster.resources.sample.num_gpus: generation.backend is vllm"),
    (VLLM_ON_GPUS.replace("backend: vllm", "backend: vllm\n  tensor_parallel_size: 2"),
     "generation.tensor_parallel_size: 2 GPUs per engine, but cluster.resources.sample.num_gpus "
     "reserves 1"),
    (VLLM_ON_GPUS.replace("sample: {num_gpus: 1}", "sample: {num_gpus: 0.5}"),
     "generation.gpu_memory_utilization: 0.85 of a GPU's memory, but "
     "cluster.resources.sample.num_gpus is 0.5"),
])
def test_what_vllm_would_reject_on_the_cluster_is_refused_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(write(tmp_path, text))


def test_a_valid_vllm_setup_loads(tmp_path):
    fractional = VLLM_ON_GPUS.replace("backend: vllm", "backend: vllm\n  gpu_memory_utilization: 0.4")
    fractional = fractional.replace("sample: {num_gpus: 1}", "sample: {num_gpus: 0.5}")
    assert load_config(write(tmp_path, fractional)).cluster.resources.sample.num_gpus == 0.5


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "gpu").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_gpu_configs_fit_an_eight_gpu_node(path):
    """Eight copies of any one-GPU stage fit a common 8-GPU node (96 vCPUs, 640 GB here):
    otherwise Ray leaves GPUs idle waiting for CPUs or memory."""
    resources = load_config(path).cluster.resources
    for group in ("teacher_generate", "sft", "dpo", "sample", "rollouts", "evaluate"):
        res = getattr(resources, group)
        assert res.num_gpus > 0, group
        per_node = 8 / res.num_gpus
        assert res.num_cpus * per_node <= 96 and res.memory_gb * per_node <= 640, group


OPENAI_TEACHER = "teacher: {kind: openai, model: m}\nopenai: {base_url: 'http://127.0.0.1:8000/v1'}\n"


@pytest.mark.parametrize("text, message", [
    ("teacher: {kind: openai}\n", "teacher.model: teacher.kind is 'openai' but no teacher.model"),
    ("teacher: {kind: openai, model: m}\n", "openai.base_url: teacher.kind is 'openai': expected "
                                           "the server's http(s) URL, got ''"),
    (OPENAI_TEACHER.replace("http://", "http://me:sk-123@"), "openai.base_url: credentials in the "
                                                             "URL would be logged"),
    (OPENAI_TEACHER + "generation: {stop: [a, b, c, d, e]}\n", "generation.stop: the OpenAI API "
                                                              "takes at most 4 stop strings"),
    (OPENAI_TEACHER.replace("}\nopenai: {", "}\nopenai: {endpoint: responses, "),
     "openai.endpoint"),
])
def test_an_openai_teacher_is_checked_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_config(write(tmp_path, text))
    assert "sk-123" not in str(info.value)


def test_an_openai_teacher_loads(tmp_path):
    config = load_config(write(tmp_path, OPENAI_TEACHER))
    assert (config.openai.endpoint, config.openai.api_key_env) == ("completions", "OPENAI_API_KEY")


OPENAI_GENERATOR = "generation: {backend: openai}\nopenai: {base_url: 'http://127.0.0.1:8000/v1'}\n"


@pytest.mark.parametrize("text, message", [
    ("generation: {backend: openai}\n", "openai.base_url: generation.backend is 'openai': "
                                        "expected the server's http(s) URL, got ''"),
    (OPENAI_GENERATOR.replace("}\nopenai: {", "}\nopenai: {endpoint: chat, "),
     "openai.endpoint: generation.backend is 'openai': students are prompted as they were "
     "trained, with the plain prompt; expected completions, got 'chat'"),
])
def test_an_openai_generator_is_checked_at_load(tmp_path, text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text))


def test_the_openai_section_reaches_the_students_only_with_generation_backend_openai(tmp_path):
    from orchestrator.config import OpenAIConfig

    generator = load_config(write(tmp_path, OPENAI_GENERATOR))
    assert generator.generation_api == generator.openai
    assert generator.generation_api.base_url == "http://127.0.0.1:8000/v1"
    teacher_only = load_config(write(tmp_path, OPENAI_TEACHER))
    assert teacher_only.generation_api == OpenAIConfig()
