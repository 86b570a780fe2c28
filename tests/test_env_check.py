"""A user's environment is checked before Coach trains on it: the first reset() and step()
against the declared spaces and the API Coach uses, and the level's module. Runs the image's
pure checker on the host with gymnasium's spaces (the checker duck-types gym's and gymnasium's)."""

from __future__ import annotations

import importlib
import sys

import gymnasium
import numpy as np
import pytest

from smrl_coach.env_check import EnvironmentCheckError, LevelNotFoundError, check_first_steps, import_level


class Corridor:
    """Old gym API (reset -> obs, step -> 4-tuple) with gymnasium spaces; `returns` changes what it returns."""

    def __init__(self, **returns):
        self.observation_space = gymnasium.spaces.Box(low=0.0, high=1.0, shape=(2,), dtype=np.float32)
        self.action_space = gymnasium.spaces.Discrete(2)
        self.returns = returns

    def reset(self):
        return self.returns.get("reset", np.zeros(2, dtype=np.float32))

    def step(self, action):
        return self.returns.get("step", (np.full(2, 0.5, dtype=np.float32), 1.0, False, {}))


def _error(env) -> str:
    with pytest.raises(EnvironmentCheckError) as raised:
        check_first_steps(env, warn=lambda line: None)
    return str(raised.value)


def test_an_env_that_keeps_its_promises_passes():
    check_first_steps(Corridor(), warn=pytest.fail)


def test_a_step_observation_of_the_wrong_shape_names_the_class_and_both_shapes():
    message = _error(Corridor(step=(np.zeros(3), 1.0, False, {})))
    assert message.startswith("Corridor (test_env_check): step() returned an observation of shape (3,), but "
                              "observation_space has shape (2,)")


def test_a_reset_observation_of_the_wrong_shape_is_found_before_any_step():
    assert "reset() returned an observation of shape (2, 1)" in _error(Corridor(reset=np.zeros((2, 1))))


def test_gymnasiums_reset_from_an_env_that_is_not_a_gymnasium_env_says_to_subclass_it():
    message = _error(Corridor(reset=(np.zeros(2), {})))
    assert "reset() returned (observation, info), gymnasium's API" in message and "subclass gymnasium.Env" in message


def test_gymnasiums_five_values_from_step_say_to_subclass_gymnasium_env():
    assert "step() returned 5 values" in _error(Corridor(step=(np.zeros(2), 1.0, False, False, {})))


@pytest.mark.parametrize(("step", "expected"), [
    ((np.zeros(2), "1.0", False, {}), "step() returned the reward '1.0' (str), not a number"),
    ((np.zeros(2), 1.0, "no", {}), "step() returned done='no' (str), not a bool"),
    ((np.zeros(2), 1.0, False, None), "step() returned info of type NoneType, not a dict"),
    ((np.array([0.0, np.nan]), 1.0, False, {}), "NaN or infinite values"),
    ((np.zeros(2), 1.0), "step() returned 2 values; Coach needs (observation, reward, done, info)"),
])
def test_each_part_of_a_step_is_checked_with_its_own_message(step, expected):
    assert expected in _error(Corridor(step=step))


def test_numpy_scalars_and_zero_one_done_flags_are_accepted():
    check_first_steps(Corridor(step=(np.zeros(2), np.float32(1.0), np.int64(0), {})), warn=pytest.fail)


def test_a_discrete_observation_outside_its_space_is_named():
    env = Corridor(reset=7)
    env.observation_space = gymnasium.spaces.Discrete(5)
    assert "reset() returned the observation 7, but observation_space is Discrete(5)" in _error(env)


def test_an_observation_outside_the_bounds_is_a_warning_not_an_error():
    warnings = []
    check_first_steps(Corridor(reset=np.full(2, 3.0)), warn=warnings.append)
    assert len(warnings) == 1 and "outside observation_space's bounds" in warnings[0]


def _import(level: str):
    module, _, name = level.partition(":")
    return getattr(importlib.import_module(module), name)


def test_a_level_whose_module_is_missing_names_it_the_folder_and_what_is_there(tmp_path):
    (tmp_path / "corridor_env.py").write_text("class Corridor:\n    pass\n")
    (tmp_path / "preset-corridor.py").write_text("")
    with pytest.raises(LevelNotFoundError) as raised:
        import_level("corridor_envs:Corridor", _import, tmp_path)
    assert str(raised.value) == (
        f"level 'corridor_envs:Corridor': no module 'corridor_envs' in {tmp_path} (the job's code, searched first) "
        "or the image. Modules there: corridor_env. Fix the level string, or add the module to "
        "source_dir or dependencies.")


def test_a_level_whose_class_is_missing_says_so(tmp_path, monkeypatch):
    (tmp_path / "corridor_env_b.py").write_text("class Corridor:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LevelNotFoundError, match="module 'corridor_env_b' has no 'Coridor'"):
        import_level("corridor_env_b:Coridor", _import, tmp_path)
    sys.modules.pop("corridor_env_b", None)


def test_a_module_missing_inside_the_env_module_keeps_its_own_error(tmp_path, monkeypatch):
    (tmp_path / "corridor_env_c.py").write_text("import no_such_dependency_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_here"):
        import_level("corridor_env_c:Corridor", _import, tmp_path)
