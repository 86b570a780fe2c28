"""`rl.<field.path>[:TypeName]` hyperparameters: parsing, checking and applying, on the host.

`smrl_coach.override_parsing` needs no Coach: the tests hand it stand-in step classes and a
small object tree shaped like a preset's graph manager. The training image binds Coach's
own step types (`smrl_coach.overrides`); tests/test_training.py runs one bad override
through the real launcher end to end.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from smrl_coach.errors import LauncherError
from smrl_coach.override_parsing import STEP_TYPE_NAMES, Override, OverrideError, StepTypes, autotype


class StepMethod:
    """Stands in for rl_coach.core_types.StepMethod: built from, and shows, a step count."""

    def __init__(self, num_steps):
        self.num_steps = num_steps

    def __eq__(self, other):
        return type(self) is type(other) and self.num_steps == other.num_steps


class EnvironmentSteps(StepMethod):
    pass


class TrainingSteps(StepMethod):
    pass


STEPS = StepTypes(base=StepMethod, by_name={name: type(name, (StepMethod,), {}) for name in STEP_TYPE_NAMES}
                  | {"EnvironmentSteps": EnvironmentSteps, "TrainingSteps": TrainingSteps})


class DQNAlgorithmParameters:
    def __init__(self):
        self.discount = 0.99
        self.num_steps_between_copying_online_weights_to_target = EnvironmentSteps(100)
        self._private = "not listed"


def preset():
    """A graph manager as the corridor preset builds it, reduced to what the tests touch."""
    return SimpleNamespace(
        improve_steps=EnvironmentSteps(400),
        agent_params=SimpleNamespace(
            algorithm=DQNAlgorithmParameters(),
            network_wrappers={"main": SimpleNamespace(learning_rate=0.00025, optimizer_type="Adam")},
        ),
    )


def _apply(name, value, graph_manager):
    return Override.parse(name, value).apply(graph_manager, STEPS)


def _error(name, value="1", graph_manager=None) -> str:
    with pytest.raises(OverrideError) as failure:
        _apply(name, value, preset() if graph_manager is None else graph_manager)
    return str(failure.value)


# -- names ---------------------------------------------------------------------------------

def test_a_name_without_a_type_suffix_is_a_dotted_field_path():
    override = Override.parse("rl.agent_params.algorithm.discount", "0.9")
    assert override.path == ("agent_params", "algorithm", "discount")
    assert override.type_name is None
    assert override.raw_value == "0.9"


def test_a_type_suffix_names_one_of_coachs_step_types():
    type_names = [Override.parse(f"rl.improve_steps:{name}", "10").type_name for name in STEP_TYPE_NAMES]
    assert type_names == list(STEP_TYPE_NAMES)
    assert Override.parse("rl.improve_steps:TrainingSteps", "10").path == ("improve_steps",)


def test_field_names_may_hold_underscores_digits_and_dashes():
    assert Override.parse("rl._a.b2.c-d", 1).path == ("_a", "b2", "c-d")


def test_an_unknown_type_suffix_lists_the_step_types():
    with pytest.raises(OverrideError) as failure:
        Override.parse("rl.improve_steps:TrainingStep", 100)
    assert str(failure.value) == (
        "Hyperparameter 'rl.improve_steps:TrainingStep': unknown type suffix ':TrainingStep'. "
        "Use one of :EnvironmentSteps, :EnvironmentEpisodes, :TrainingSteps, :Frames, :Time, or no suffix."
    )


def test_an_empty_type_suffix_is_unknown():
    with pytest.raises(OverrideError, match=r"unknown type suffix ':'\. Use one of :EnvironmentSteps"):
        Override.parse("rl.improve_steps:", 100)


def test_an_empty_path_part_is_not_a_field_name():
    with pytest.raises(OverrideError) as failure:
        Override.parse("rl.agent_params..discount", 0.9)
    assert str(failure.value) == (
        "Hyperparameter 'rl.agent_params..discount': '' is not a field name. "
        "Write rl.<field>.<field>..., e.g. rl.agent_params.algorithm.discount."
    )


@pytest.mark.parametrize("name, bad", [
    ("rl.", ""),
    ("rl.agent_params.", ""),
    ("rl.agent_params.__class__", "__class__"),
    ("rl.9lives", "9lives"),
    ("rl.agent params", "agent params"),
    ("rl.network_wrappers[main]", "network_wrappers[main]"),
])
def test_dunder_and_malformed_parts_are_not_field_names(name, bad):
    with pytest.raises(OverrideError) as failure:
        Override.parse(name, 1)
    assert str(failure.value).startswith(f"Hyperparameter {name!r}: {bad!r} is not a field name. Write rl.<field>")


def test_a_name_without_the_rl_prefix_is_not_an_override():
    with pytest.raises(OverrideError) as failure:
        Override.parse("agent_params.algorithm.discount", 0.9)
    assert str(failure.value) == (
        "Hyperparameter 'agent_params.algorithm.discount' is not an override: overrides start with 'rl.'."
    )


def test_override_errors_are_launcher_errors_so_the_launcher_reports_them_without_a_traceback():
    assert issubclass(OverrideError, LauncherError)


# -- values --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("0.9", 0.9),
    ("5000", 5000),
    ("true", True),
    (" False ", False),
    ("TRUE", True),
    ("null", None),
    ('"quoted"', "quoted"),
    ("[1, 2]", [1, 2]),
    ('{"a": 1}', {"a": 1}),
    ("adam", "adam"),
    ("", ""),
])
def test_text_values_get_their_json_type_back(text, value):
    assert autotype(text) == value
    assert type(autotype(text)) is type(value)


@pytest.mark.parametrize("value", [0.9, 7, True, None, [1, 2]])
def test_values_that_are_not_text_are_kept(value):
    assert autotype(value) is value


# -- applying to a preset ------------------------------------------------------------------

def test_an_override_sets_the_field_and_says_what_changed():
    graph_manager = preset()
    line = _apply("rl.agent_params.algorithm.discount", "0.9", graph_manager)
    assert graph_manager.agent_params.algorithm.discount == 0.9
    assert line == "rl.agent_params.algorithm.discount = 0.9 (preset had 0.99)"


def test_an_override_walks_into_dicts():
    graph_manager = preset()
    line = _apply("rl.agent_params.network_wrappers.main.learning_rate", "0.001", graph_manager)
    assert graph_manager.agent_params.network_wrappers["main"].learning_rate == 0.001
    assert line == "rl.agent_params.network_wrappers.main.learning_rate = 0.001 (preset had 0.00025)"


def test_an_override_sets_a_dict_entry():
    graph_manager = preset()
    _apply("rl.agent_params.network_wrappers.main", '{"learning_rate": 0.1}', graph_manager)
    assert graph_manager.agent_params.network_wrappers["main"] == {"learning_rate": 0.1}


def test_an_integer_for_a_float_field_stays_a_float():
    graph_manager = preset()
    line = _apply("rl.agent_params.algorithm.discount", "1", graph_manager)
    assert graph_manager.agent_params.algorithm.discount == 1.0
    assert type(graph_manager.agent_params.algorithm.discount) is float
    assert line == "rl.agent_params.algorithm.discount = 1.0 (preset had 0.99)"


def test_a_boolean_for_a_float_field_is_not_made_a_float():
    graph_manager = preset()
    _apply("rl.agent_params.algorithm.discount", "true", graph_manager)
    assert graph_manager.agent_params.algorithm.discount is True


def test_a_plain_number_for_a_step_budget_keeps_the_presets_step_type():
    graph_manager = preset()
    line = _apply("rl.improve_steps", "5000", graph_manager)
    assert graph_manager.improve_steps == EnvironmentSteps(5000)
    assert line == "rl.improve_steps = EnvironmentSteps(5000) (preset had EnvironmentSteps(400))"


def test_a_type_suffix_builds_that_step_type():
    graph_manager = preset()
    line = _apply("rl.improve_steps:TrainingSteps", "100", graph_manager)
    assert graph_manager.improve_steps == TrainingSteps(100)
    assert line == "rl.improve_steps:TrainingSteps = TrainingSteps(100) (preset had EnvironmentSteps(400))"


def test_a_whole_float_step_count_becomes_an_int():
    graph_manager = preset()
    _apply("rl.improve_steps", "100.0", graph_manager)
    assert graph_manager.improve_steps.num_steps == 100
    assert type(graph_manager.improve_steps.num_steps) is int


@pytest.mark.parametrize("value", ["many", "true", "[100]"])
def test_a_step_count_must_be_a_number(value):
    message = _error("rl.improve_steps:TrainingSteps", value)
    assert message == (
        f"Hyperparameter 'rl.improve_steps:TrainingSteps': a step count must be a number, got {autotype(value)!r}."
    )
    message = _error("rl.improve_steps", value)
    assert "a step count must be a number" in message


def test_a_misspelled_field_is_an_error_that_suggests_the_field():
    graph_manager = preset()
    message = _error("rl.agent_params.algorithm.discont", 0.9, graph_manager)
    assert "has no field 'discont'" in message
    assert "Did you mean 'discount'?" in message
    assert message == (
        "Hyperparameter 'rl.agent_params.algorithm.discont': DQNAlgorithmParameters at agent_params.algorithm "
        "has no field 'discont'. Did you mean 'discount'? "
        "Its fields: discount, num_steps_between_copying_online_weights_to_target."
    )
    assert graph_manager.agent_params.algorithm.discount == 0.99
    assert not hasattr(graph_manager.agent_params.algorithm, "discont")


def test_a_misspelled_field_on_the_way_is_named_with_its_parent():
    message = _error("rl.agent_params.algoritm.discount")
    assert message == (
        "Hyperparameter 'rl.agent_params.algoritm.discount': SimpleNamespace at agent_params has no field "
        "'algoritm'. Did you mean 'algorithm'? Its fields: algorithm, network_wrappers."
    )


def test_a_missing_top_level_field_is_on_the_graph_manager():
    message = _error("rl.improve_step")
    assert message.startswith(
        "Hyperparameter 'rl.improve_step': SimpleNamespace at the preset's graph manager has no field "
        "'improve_step'. Did you mean 'improve_steps'?"
    )


def test_a_missing_dict_key_lists_the_keys():
    message = _error("rl.agent_params.network_wrappers.mian.learning_rate")
    assert message == (
        "Hyperparameter 'rl.agent_params.network_wrappers.mian.learning_rate': dict at "
        "agent_params.network_wrappers has no field 'mian'. Did you mean 'main'? Its fields: main."
    )


def test_an_unlike_name_gets_no_suggestion():
    message = _error("rl.agent_params.algorithm.zzz")
    assert "Did you mean" not in message
    assert message.endswith(
        "has no field 'zzz'. Its fields: discount, num_steps_between_copying_online_weights_to_target."
    )


def test_underscore_attributes_are_reachable_but_not_listed():
    graph_manager = preset()
    _apply("rl.agent_params.algorithm._private", "set", graph_manager)
    assert graph_manager.agent_params.algorithm._private == "set"
    message = _error("rl.agent_params.algorithm._privat")
    assert "has no field '_privat'" in message
    assert "_private" not in message


def test_a_value_without_fields_has_none():
    message = _error("rl.agent_params.algorithm.discount.real")
    assert message == (
        "Hyperparameter 'rl.agent_params.algorithm.discount.real': float at agent_params.algorithm.discount "
        "has no field 'real'. Its fields: (none)."
    )
