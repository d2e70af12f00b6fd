"""Planning is pure and deterministic; cache keys move exactly when they should."""

from __future__ import annotations

from orchestrator.config import config_from_dict
from orchestrator.planning import expand_grid

BASE = {"grid": {"sizes": [100, 200], "seeds": [0, 1]}, "task": {"n_train": 1000}}


def plan_for(**changes):
    raw = {k: dict(v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        node = raw.setdefault(section, {})
        if "__" in key:
            sub, _, key = key.partition("__")
            node = node.setdefault(sub, {})
        node[key] = value
    return expand_grid(config_from_dict(raw))


def keys_by_id(plan):
    return {spec.id: spec.key for spec in plan.specs}


def test_plan_is_deterministic_and_topological():
    a, b = plan_for(), plan_for()
    assert keys_by_id(a) == keys_by_id(b)
    position = {spec.key: i for i, spec in enumerate(a.specs)}
    for spec in a.specs:
        for _, upstream in spec.inputs:
            assert position[upstream] < position[spec.key], f"{spec.id} before its input"


def test_grid_shape():
    plan = plan_for()
    stages = [spec.stage for spec in plan.specs]
    # one base model and one teacher pool shared by everything
    assert stages.count("base_model") == 1 and stages.count("teacher_generate") == 1
    assert stages.count("sft") == 4 and stages.count("evaluate") == 4
    assert {(c.data_type, c.n, c.seed) for c in plan.cells} == {
        ("sft_teacher", n, s) for n in (100, 200) for s in (0, 1)}


def test_keys_are_unique_per_stage_execution():
    plan = plan_for()
    assert len({s.key for s in plan.specs}) == len(plan.specs)


def test_seed_changes_training_not_shared_stages():
    a, b = keys_by_id(plan_for()), keys_by_id(plan_for(grid__seeds=[0, 2]))
    assert a["base_model[tiny]"] == b["base_model[tiny]"]
    assert a["sft[n=100,seed=0]"] == b["sft[n=100,seed=0]"]
    assert "sft[n=100,seed=2]" in b and "sft[n=100,seed=1]" not in b


def test_a_training_knob_moves_training_and_evaluation_only():
    a, b = keys_by_id(plan_for()), keys_by_id(plan_for(train__sft__learning_rate=1e-3))
    assert a["base_model[tiny]"] == b["base_model[tiny]"]
    assert a["teacher_generate[oracle,pool=200]"] == b["teacher_generate[oracle,pool=200]"]
    assert a["sft[n=100,seed=0]"] != b["sft[n=100,seed=0]"]
    assert a["evaluate[sft_teacher,n=100,seed=0]"] != b["evaluate[sft_teacher,n=100,seed=0]"]


def test_test_set_size_never_retrains():
    a, b = keys_by_id(plan_for()), keys_by_id(plan_for(task__n_test=50))
    for stage_id in a:
        if not stage_id.startswith("evaluate"):
            assert a[stage_id] == b[stage_id], stage_id
    assert a["evaluate[sft_teacher,n=100,seed=0]"] != b["evaluate[sft_teacher,n=100,seed=0]"]


def test_explicit_pool_size_keeps_keys_when_sizes_grow():
    small = keys_by_id(plan_for(teacher__pool_size=400))
    grown = keys_by_id(plan_for(teacher__pool_size=400, grid__sizes=[100, 200, 400]))
    for stage_id, key in small.items():
        assert grown[stage_id] == key, stage_id
    assert "sft[n=400,seed=0]" in grown


def test_model_architecture_moves_the_base_model_and_everything_below():
    a, b = keys_by_id(plan_for()), keys_by_id(plan_for(model__hidden_size=64))
    assert a["base_model[tiny]"] != b["base_model[tiny]"]
    assert a["sft[n=100,seed=0]"] != b["sft[n=100,seed=0]"]
    assert a["teacher_generate[oracle,pool=200]"] == b["teacher_generate[oracle,pool=200]"]


def test_cells_carry_their_whole_chain():
    plan = plan_for()
    cell = plan.cells[0]
    stages = [plan.get(k).stage for k in cell.chain]
    assert stages == ["base_model", "teacher_generate", "sft", "evaluate"]
    assert cell.chain[-1] == cell.eval_key


# ---------------------------------------------------------------- the planning layer


def test_every_stage_is_wired_with_exactly_the_inputs_it_reads():
    from orchestrator.stages import STAGES

    plan = plan_for(grid__data_types=["sft_teacher", "rft_self", "dpo_negative", "dpo_per_step"])
    for spec in plan.specs:
        assert sorted(name for name, _ in spec.inputs) == sorted(STAGES[spec.stage].inputs), spec.id


def test_the_nll_only_control_trains_on_the_per_step_pairs_with_the_nll_term_alone():
    plan = plan_for(grid__data_types=["sft_teacher", "dpo_per_step", "dpo_nll_only"],
                    train__dpo__loss_type=["sigmoid", "sft"], train__dpo__loss_weights=[1.0, 0.5])
    by_id = {spec.id: spec for spec in plan.specs}
    control, per_step = by_id["dpo[dpo_nll_only,n=100,seed=0]"], by_id["dpo[dpo_per_step,n=100,seed=0]"]
    assert dict(control.inputs) == dict(per_step.inputs)          # same SFT model, same pairs
    assert control.params.dpo.loss_type == ("sft",) and control.params.dpo.loss_weights == (0.5,)
    assert per_step.params.dpo.loss_type == ("sigmoid", "sft")
    assert [s.stage for s in plan.specs].count("step_pairs") == 2 * 2   # per (n, seed), shared


def test_make_spec_rejects_inputs_the_stage_does_not_read():
    import pytest

    from orchestrator.planning import make_spec
    from orchestrator.stages.pairs import PairsParams

    config = config_from_dict(BASE)
    with pytest.raises(ValueError, match=r"pairs: wired inputs \['model'\], the stage reads \['samples'\]"):
        make_spec(config, "pairs", "x", PairsParams(config.pairs, 0), {"model": "k"})


def test_cell_builder_labels_and_tags_each_stage_with_its_grid_point():
    plan = plan_for(grid__data_types=["sft_teacher", "dpo_per_step"])
    by_id = {spec.id: spec for spec in plan.specs}
    assert by_id["rollouts[n=200,seed=1]"].tag_dict == {"data_type": "dpo_per_step", "n": "200",
                                                        "seed": "1"}
    assert by_id["sample[n=200,seed=1]"].tag_dict == {"n": "200", "seed": "1"}   # shared by rows
    assert "dpo[dpo_per_step,n=100,seed=0]" in by_id
    assert "evaluate[sft_teacher,n=100,seed=0]" in by_id
    assert by_id["base_model[tiny]"].tags == () and by_id["base_model[tiny]"].inputs == ()


def test_slices_leave_out_what_a_stage_does_not_read():
    """Split sizes enter only the stages that read them; the oracle teacher reads no teacher knob."""
    def key(plan, stage_id):
        return keys_by_id(plan)[stage_id]

    base = plan_for()
    more_train = plan_for(task__n_train=2000)
    teacher_knob = plan_for(teacher__temperature=0.3)
    for stage_id in ("base_model[tiny]", "teacher_generate[oracle,pool=200]",
                     "evaluate[sft_teacher,n=100,seed=0]"):
        assert key(more_train, stage_id) == key(base, stage_id), stage_id
        assert key(teacher_knob, stage_id) == key(base, stage_id), stage_id


def test_a_hub_base_model_is_keyed_by_its_name_alone():
    from orchestrator.stages.base_model import HubModelParams

    hub = {"model__base": "org/model", "task__name": "gsm8k", "task__path": "tests",
           "teacher__kind": "model", "teacher__model": "org/teacher"}
    plan = plan_for(**hub)
    assert plan.specs[0].params == HubModelParams("org/model")
    assert keys_by_id(plan_for(**hub, model__hidden_size=64)) == keys_by_id(plan)


def test_rft_matches_its_baselines_steps_only_when_asked():
    from orchestrator.config import SFTSettings
    from orchestrator.stages.sft import matched_epochs

    plain = keys_by_id(plan_for(grid__data_types=["sft_teacher", "rft_self"]))
    matched_plan = plan_for(grid__data_types=["sft_teacher", "rft_self"], rft__match_sft_steps=True)
    matched = keys_by_id(matched_plan)
    changed = {i for i in plain if plain[i] != matched[i]}
    assert changed == {f"{stage}[rft_self,n={n},seed={s}]" for stage in ("sft", "evaluate")
                       for n in (100, 200) for s in (0, 1)}
    spec = next(s for s in matched_plan.specs if s.id == "sft[rft_self,n=200,seed=1]")
    assert spec.params.match_steps_of == 200
    # 3 epochs of 200 examples in batches of 32: 7 steps an epoch, 21 in all; 450 RFT
    # examples take 15 an epoch, so 1.4 epochs: ceil(1.4 * 15) = 21 steps too
    settings = SFTSettings(epochs=3.0, batch_size=32)
    assert matched_epochs(settings, 200, 450) == 3.0 * 7 / 15


def test_a_knob_added_later_moves_keys_only_off_its_default():
    """per_step.rejected came after artifacts existed (KEY_NEUTRAL): at to_end, the old
    behaviour, every key is what it was before the knob; the config's default, through_pit
    (the paper's), moves the step pairs and downstream, and only those."""
    from orchestrator.planning.plan import key_data

    rows = ["sft_teacher", "dpo_per_step", "dpo_nll_only"]
    legacy = keys_by_id(plan_for(grid__data_types=rows, per_step__rejected="to_end"))
    default = keys_by_id(plan_for(grid__data_types=rows))
    explicit = keys_by_id(plan_for(grid__data_types=rows, per_step__rejected="through_pit"))
    assert explicit == default
    changed = {i.split("[")[0] + ("" if "dpo_" not in i else "/" + i.split("[")[1].split(",")[0])
               for i in default if default[i] != legacy[i]}
    assert changed == {"step_pairs", "dpo/dpo_per_step", "dpo/dpo_nll_only",
                       "evaluate/dpo_per_step", "evaluate/dpo_nll_only"}
    spec = next(s for s in plan_for(grid__data_types=rows, per_step__rejected="to_end").specs
                if s.stage == "step_pairs")
    assert "rejected" not in key_data(spec.params) and spec.params.rejected == "to_end"


def test_an_openai_teachers_key_has_server_model_endpoint_and_sampling_never_the_key(monkeypatch):
    """A model teacher's key is what it was before the openai section existed (that section
    is not in its params); an openai teacher's key moves with what decides its answers."""
    def pool_key(**changes):
        return next(s.key for s in plan_for(**changes).specs if s.stage == "teacher_generate")

    api = {"teacher__kind": "openai", "teacher__model": "m",
           "openai__base_url": "http://127.0.0.1:8000/v1"}
    assert pool_key(teacher__kind="model", teacher__model="m") == pool_key(
        teacher__kind="model", teacher__model="m", openai__base_url="http://elsewhere/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "one")
    key = pool_key(**api)
    monkeypatch.setenv("OPENAI_API_KEY", "another")
    assert pool_key(**api) == key
    moved = [pool_key(**{**api, **change}) for change in (
        {"openai__base_url": "http://elsewhere/v1"}, {"teacher__model": "n"},
        {"openai__endpoint": "chat"}, {"teacher__temperature": 0.5},
        {"teacher__max_new_tokens": 64}, {"generation__stop": ["\n\n"]})]
    assert len({key, *moved}) == 7


def test_a_key_neutral_field_with_a_default_factory_is_left_out_at_its_default():
    """key_data compares a KEY_NEUTRAL field with what its factory makes: a nested config
    given by default_factory has no `f.default`, and must still leave old keys alone."""
    from dataclasses import dataclass, field

    from orchestrator.config import OpenAIConfig
    from orchestrator.contract import KEY_NEUTRAL
    from orchestrator.planning.plan import key_data

    @dataclass(frozen=True)
    class Params:
        n: int
        api: OpenAIConfig = field(default_factory=OpenAIConfig, metadata={KEY_NEUTRAL: True})

    assert key_data(Params(3)) == {"n": 3}
    moved = key_data(Params(3, OpenAIConfig(base_url="http://127.0.0.1:8000/v1")))
    assert moved["api"]["base_url"] == "http://127.0.0.1:8000/v1"


def test_an_openai_generator_moves_the_generating_stages_keys_and_nothing_else(monkeypatch):
    """generation.backend hf keeps every key (the openai section is in no student's params,
    whatever it holds); openai moves sample, rollouts, evaluate and what reads them, with the
    server, never with the API key."""
    from orchestrator.planning.plan import key_data

    rows = ["sft_teacher", "rft_self", "dpo_per_step"]
    hf = keys_by_id(plan_for(grid__data_types=rows))
    assert keys_by_id(plan_for(grid__data_types=rows,
                               openai__base_url="http://127.0.0.1:8000/v1")) == hf
    for spec in plan_for(grid__data_types=rows).specs:
        assert "openai" not in key_data(spec.params), spec.id

    api = {"grid__data_types": rows, "generation__backend": "openai",
           "openai__base_url": "http://127.0.0.1:8000/v1"}
    monkeypatch.setenv("OPENAI_API_KEY", "one")
    served = keys_by_id(plan_for(**api))
    monkeypatch.setenv("OPENAI_API_KEY", "another")
    assert keys_by_id(plan_for(**api)) == served
    unmoved = {i for i in hf if hf[i] == served[i]}
    assert unmoved == {i for i in hf if i.startswith(("base_model", "teacher_generate",
                                                      "sft[n="))}      # the pool's SFT
    assert all(served[i] != hf[i] for i in hf if i.split("[")[0] in ("sample", "rollouts",
                                                                      "evaluate"))
    elsewhere = keys_by_id(plan_for(**{**api, "openai__base_url": "http://elsewhere/v1"}))
    assert all(elsewhere[i] != served[i] for i in hf if i.startswith("evaluate"))
    spec = next(s for s in plan_for(**api).specs if s.stage == "evaluate")
    assert spec.params.openai.base_url == "http://127.0.0.1:8000/v1"
    assert "one" not in str(key_data(spec.params)) and "another" not in str(key_data(spec.params))
