"""A job's code is laid out as the cloud lays it out, and known failures name their cause.

Pure logic: no Docker, no SDK calls.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emulator.diagnosis import REBUILD_INFERENCE, REBUILD_TRAINING, diagnose
from emulator.jobcode import JobCodeError, copy_job_code


@pytest.fixture
def example(tmp_path) -> Path:
    """The public CartPole example's layout: src/, and common/sagemaker_rl behind a symlink."""
    root = tmp_path / "reinforcement_learning"
    (root / "common" / "sagemaker_rl").mkdir(parents=True)
    (root / "common" / "sagemaker_rl" / "__init__.py").write_text("")
    (root / "common" / "sagemaker_rl" / "coach_launcher.py").write_text("LAUNCHER = 1\n")
    (root / "common" / "misc.py").write_text("")
    src = root / "rl_cartpole_coach" / "src"
    src.mkdir(parents=True)
    (src / "train-coach.py").write_text("import sagemaker_rl\n")
    (src / "preset-cartpole-dqn.py").write_text("graph_manager = None\n")
    (root / "rl_cartpole_coach" / "common").symlink_to("../common")
    return root / "rl_cartpole_coach"


def test_dependencies_land_beside_the_entry_point_under_their_own_names(example, tmp_path, monkeypatch):
    monkeypatch.chdir(example)
    target = tmp_path / "code"
    copy_job_code(example / "src", ["common/sagemaker_rl"], target)
    assert sorted(p.name for p in target.iterdir()) == ["preset-cartpole-dqn.py", "sagemaker_rl", "train-coach.py"]
    assert (target / "sagemaker_rl" / "coach_launcher.py").read_text() == "LAUNCHER = 1\n"


def test_without_source_dir_only_the_entry_point_is_packed(example, tmp_path):
    target = tmp_path / "code"
    copy_job_code(example / "src", [], target, entry_point="train-coach.py")
    assert [p.name for p in target.iterdir()] == ["train-coach.py"]


def test_the_copy_is_independent_of_the_users_folder(example, tmp_path):
    target = tmp_path / "code"
    copy_job_code(example / "src", [], target)
    (target / "train-coach.py").write_text("changed")
    assert (example / "src" / "train-coach.py").read_text() == "import sagemaker_rl\n"


def test_a_missing_dependency_is_an_error_naming_the_path(example, tmp_path, monkeypatch):
    monkeypatch.chdir(example)
    with pytest.raises(JobCodeError, match=r"Dependency 'common/no_such_lib' does not exist .*fix the path"):
        copy_job_code(example / "src", ["common/no_such_lib"], tmp_path / "code")


def test_a_dependency_that_collides_with_source_dir_is_an_error(example, tmp_path, monkeypatch):
    monkeypatch.chdir(example)
    (example / "train-coach.py").write_text("")
    with pytest.raises(JobCodeError, match="lands on 'train-coach.py'.*Rename one of them"):
        copy_job_code(example / "src", [os.fspath(example / "train-coach.py")], tmp_path / "code")


def test_a_missing_module_found_in_the_job_folder_is_named_as_the_dependency_to_add(example):
    log = "Traceback ...\nModuleNotFoundError: No module named 'sagemaker_rl'\n"
    found = diagnose(log, example)
    assert "imports sagemaker_rl" in found.cause
    assert found.fix.startswith("add it to the estimator: dependencies=['common/sagemaker_rl']")
    assert found.line == "ModuleNotFoundError: No module named 'sagemaker_rl'"


def test_a_missing_module_found_nowhere_is_a_package_for_requirements_txt(example):
    found = diagnose("ModuleNotFoundError: No module named 'tensorflow.compat'", example)
    assert "imports tensorflow" in found.cause and "requirements.txt" in found.fix


@pytest.mark.parametrize("line", [
    'ImportError: Library "GL" not found.',
    "pyglet.canvas.xlib.NoSuchDisplayException: Cannot connect to \"None\"",
])
def test_rendering_without_a_display_names_the_virtual_display(line):
    found = diagnose(f"algo-1 | {line}")
    assert "no display or OpenGL" in found.cause and found.fix.startswith(REBUILD_TRAINING)


def test_an_onnx_export_the_public_helper_rejects_names_the_output_order():
    found = diagnose("Exception: Can't determine the RL Agent used from the ONNX graph provided.")
    assert "first output" in found.cause and found.fix.startswith(REBUILD_TRAINING)


def test_an_onnx_model_the_importer_rejects_names_the_inference_image():
    found = diagnose("The serving container could not load the model: Flatten operator only supports axis=1")
    assert "ONNX importer" in found.cause and found.fix.startswith(REBUILD_INFERENCE)


def test_an_unknown_failure_has_no_diagnosis():
    assert diagnose("ValueError: the environment returned NaN") is None


def test_a_training_shape_error_is_not_taken_for_an_onnx_import_failure():
    assert diagnose("MXNetError: Check failed: Reshape: target shape size is 6, input shape size is 4") is None


def test_an_endpoint_missing_coach_is_told_to_deploy_with_an_inference_script():
    found = diagnose("ModuleNotFoundError: No module named 'rl_coach'")
    assert found is not None and "serving image (MXNet) does not have" in found.cause
    assert "entry_point='deploy-mxnet-coach.py'" in found.fix
