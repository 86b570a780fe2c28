"""`smrl-local`: a fixable error is one line, a bug keeps its traceback; options say what they are."""

from __future__ import annotations

import pytest

from emulator import cli
from emulator.errors import UserError


def _engine_command_raising(monkeypatch, error: BaseException) -> None:
    def run(args):
        raise error

    monkeypatch.setattr(cli, "_cmd_engine", run)


def test_a_fixable_error_is_one_line_naming_cause_and_fix(monkeypatch, capsys):
    _engine_command_raising(monkeypatch, UserError("No engine. Start it: `make engine`."))
    assert cli.main(["engine"]) == 1
    assert capsys.readouterr().err == "smrl-local: No engine. Start it: `make engine`.\n"


def test_verbose_adds_the_traceback_of_a_fixable_error(monkeypatch, capsys):
    _engine_command_raising(monkeypatch, UserError("No engine."))
    assert cli.main(["--verbose", "engine"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and err.endswith("smrl-local: No engine.\n")


def test_a_bug_is_not_dressed_as_a_user_error(monkeypatch):
    _engine_command_raising(monkeypatch, KeyError("internal"))
    with pytest.raises(KeyError):
        cli.main(["engine"])


def test_ctrl_c_exits_130(monkeypatch, capsys):
    _engine_command_raising(monkeypatch, KeyboardInterrupt())
    assert cli.main(["engine"]) == 130
    assert capsys.readouterr().err == "interrupted\n"


def test_train_env_sets_container_variables_and_serve_gym_env_names_a_gymnasium_id():
    parser = cli.build_parser()
    train = parser.parse_args(["train", "--env", "SMRL_COACH_FAST=0", "-p", "rl.discount=0.9"])
    assert train.env == [("SMRL_COACH_FAST", "0")] and train.hyperparameter == [("rl.discount", 0.9)]
    serve = parser.parse_args(["serve", "--gym-env", "CartPole-v1"])
    assert serve.gym_env == "CartPole-v1"
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--env", "CartPole-v1"])


def test_a_hyperparameter_without_a_value_is_refused_with_an_example(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "-p", "rl.discount"])
    assert "expected NAME=VALUE, got 'rl.discount' (e.g. rl.agent_params.algorithm.discount=0.95)" in capsys.readouterr().err
