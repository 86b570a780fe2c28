"""What the training image reads from /opt/ml and writes back, on the host: the job's
hyperparameters (`smrl_training.environment`) and its outcome files (`smrl_training.outcome`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import contract
from smrl_training.environment import TrainingEnvironment
from smrl_training.outcome import write_failure, write_success


def _job(tmp_path: Path, hyperparameters: dict) -> TrainingEnvironment:
    """The SDK writes every value JSON-encoded, as local mode and SageMaker do."""
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({name: json.dumps(value) for name, value in hyperparameters.items()}))
    return TrainingEnvironment.from_files(path)


# -- hyperparameters -----------------------------------------------------------------------

def test_from_files_reads_the_contracts_hyperparameters_file_by_default():
    assert TrainingEnvironment.from_files.__defaults__ == (contract.HYPERPARAMETERS_FILE,)


def test_json_encoded_values_get_their_types_back(tmp_path):
    env = _job(tmp_path, {"lr": 0.1, "steps": 100, "on": True, "name": "cartpole", "layers": [64, 64],
                          "opts": {"a": 1}, "none": None})
    assert env.hyperparameters == {"lr": 0.1, "steps": 100, "on": True, "name": "cartpole", "layers": [64, 64],
                                   "opts": {"a": 1}, "none": None}


def test_values_that_are_not_json_text_are_kept_as_they_are(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text(json.dumps({"plain": "not json", "number": 3, "flag": False}))
    assert TrainingEnvironment.from_files(path).hyperparameters == {"plain": "not json", "number": 3, "flag": False}


def test_no_hyperparameters_file_is_a_job_without_hyperparameters(tmp_path):
    env = TrainingEnvironment.from_files(tmp_path / "missing.json")
    assert env.hyperparameters == {} and env.reserved == {}
    assert env.program is None
    assert env.user_args() == []


def test_an_unreadable_hyperparameters_file_is_a_value_error(tmp_path):
    path = tmp_path / "hyperparameters.json"
    path.write_text("{not json")
    with pytest.raises(ValueError):
        TrainingEnvironment.from_files(path)


def test_sagemaker_parameters_are_reserved_and_never_user_hyperparameters(tmp_path):
    env = _job(tmp_path, {
        "sagemaker_program": "train_coach.py",
        "sagemaker_submit_directory": "s3://bucket/job/source/sourcedir.tar.gz",
        "sagemaker_container_log_level": 20,
        "RLCOACH_PRESET": "preset-cartpole-dqn",
        "rl.agent_params.algorithm.discount": 0.9,
    })
    assert env.reserved == {
        "sagemaker_program": "train_coach.py",
        "sagemaker_submit_directory": "s3://bucket/job/source/sourcedir.tar.gz",
        "sagemaker_container_log_level": 20,
    }
    assert env.hyperparameters == {"RLCOACH_PRESET": "preset-cartpole-dqn", "rl.agent_params.algorithm.discount": 0.9}
    assert env.program == "train_coach.py"


# -- where the code is ---------------------------------------------------------------------

def test_code_is_in_the_contracts_code_dir_without_a_submit_directory():
    assert TrainingEnvironment(hyperparameters={}).code_dir == contract.CODE_DIR


def test_an_s3_submit_directory_was_never_downloaded_so_code_is_in_the_code_dir():
    env = TrainingEnvironment(hyperparameters={}, reserved={"sagemaker_submit_directory": "s3://b/k/sourcedir.tar.gz"})
    assert env.code_dir == contract.CODE_DIR


def test_a_local_submit_directory_is_where_the_code_is():
    env = TrainingEnvironment(hyperparameters={}, reserved={"sagemaker_submit_directory": "/opt/ml/code/src"})
    assert env.code_dir == Path("/opt/ml/code/src")


# -- the script's arguments ----------------------------------------------------------------

def test_user_args_are_name_value_pairs_in_order(tmp_path):
    env = _job(tmp_path, {"RLCOACH_PRESET": "preset-cartpole-dqn", "save_model": 1, "sagemaker_program": "t.py"})
    assert env.user_args() == ["--RLCOACH_PRESET", "preset-cartpole-dqn", "--save_model", "1"]


def test_user_args_write_scalars_as_python_text_and_lists_and_dicts_as_json():
    env = TrainingEnvironment(hyperparameters={"lr": 0.001, "on": True, "off": None, "layers": [64, 64],
                                               "opts": {"a": "b"}, "name": "x y"})
    assert env.user_args() == ["--lr", "0.001", "--on", "True", "--off", "None", "--layers", "[64, 64]",
                               "--opts", '{"a": "b"}', "--name", "x y"]


def test_override_names_pass_through_as_they_are():
    env = TrainingEnvironment(hyperparameters={"rl.improve_steps:TrainingSteps": 5000})
    assert env.user_args() == ["--rl.improve_steps:TrainingSteps", "5000"]


# -- the outcome files ---------------------------------------------------------------------

def test_the_outcome_files_default_to_the_contracts():
    assert write_failure.__defaults__ == (contract.FAILURE_FILE,)
    assert write_success.__defaults__ == (contract.SUCCESS_FILE,)


def test_a_failure_is_written_with_its_folder(tmp_path):
    failure = tmp_path / "output" / "failure"
    write_failure("smrl-coach error: Preset 'x' not found", failure)
    assert failure.read_text() == "smrl-coach error: Preset 'x' not found"


def test_a_later_failure_replaces_an_earlier_one(tmp_path):
    failure = tmp_path / "failure"
    write_failure("first", failure)
    write_failure("second", failure)
    assert failure.read_text() == "second"


def test_an_unwritable_failure_file_does_not_hide_the_error(tmp_path):
    blocker = tmp_path / "output"
    blocker.write_text("a file where the folder should be")
    write_failure("message", blocker / "failure")  # no exception
    assert blocker.read_text() == "a file where the folder should be"


def test_success_is_an_empty_marker(tmp_path):
    success = tmp_path / "success"
    write_success(success)
    assert success.read_bytes() == b""


def test_an_unwritable_success_marker_is_no_error(tmp_path):
    write_success(tmp_path / "missing-folder" / "success")
    assert not (tmp_path / "missing-folder").exists()
