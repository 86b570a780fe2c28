"""What the images are built from and where the package finds its files: pure logic, no Docker."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO
from emulator import contract, images, resources


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "training"
    shutil.copytree(REPO / "containers" / "training", context, ignore=shutil.ignore_patterns("__pycache__"))
    return context


def test_a_lock_splits_into_wheels_and_sdists_without_comments(tmp_path):
    lock = tmp_path / "requirements-cpu.lock"
    lock.write_text("# pinned\nnumpy==1.26.4  # for mxnet\nrl-coach==1.0.1  # build-from-sdist\n\n")
    assert images.read_lock(lock) == (["numpy==1.26.4"], ["rl-coach==1.0.1"])


def test_the_build_context_holds_the_shared_contract_and_only_its_variants_lock(tmp_path):
    files = images.context_files(_context(tmp_path), "cpu")
    assert files[images.CONTRACT_IN_CONTEXT] == Path(contract.__file__)
    assert "requirements-cpu.lock" in files and "requirements-gpu.lock" not in files


def test_the_inputs_hash_follows_every_file_of_the_context_and_the_base(tmp_path):
    context = _context(tmp_path)
    first = images.inputs_hash(context, "cpu", "sha256:base")
    assert images.inputs_hash(context, "cpu", "sha256:base") == first
    assert images.inputs_hash(context, "cpu", "sha256:other-base") != first
    assert images.inputs_hash(context, "gpu", "sha256:base") != first
    (context / "requirements-gpu.lock").write_text("changed\n")  # the other variant's lock: no effect
    assert images.inputs_hash(context, "cpu", "sha256:base") == first
    (context / "bin" / "train").write_text("#!/bin/sh\n")
    assert images.inputs_hash(context, "cpu", "sha256:base") != first


def test_the_offline_base_names_its_package_list():
    packages = images.offline_base_packages()
    assert packages[: len(images.CORE_BASE_PACKAGES)] == list(images.CORE_BASE_PACKAGES)
    assert "xvfb" in packages
    assert images.offline_base_image().startswith("sagemaker-rl-local/base:bookworm-")


def test_local_tags_come_from_the_contract_and_refuse_unknown_variants():
    assert images.training_image("cpu") == "sagemaker-rl-local/coach-mxnet:1.0.1-cpu"
    assert images.inference_image("gpu") == "sagemaker-rl-local/mxnet-inference:1.9.1-gpu"
    with pytest.raises(ValueError, match="Unknown image variant 'tpu'"):
        images.training_image("tpu")


@pytest.mark.parametrize(("image", "ours"), [
    ("sagemaker-rl-local/coach-mxnet:1.0.1-cpu", True),
    ("520713654638.dkr.ecr.eu-north-1.amazonaws.com/sagemaker-rl-mxnet:coach0.11.0-cpu-py3", True),
    ("my-registry/my-image:1", False),
])
def test_our_images_are_known_by_local_tag_and_sdk_uri(image, ours):
    assert images.is_our_image(image) is ours


def test_the_sdk_uris_are_the_ones_rlestimator_and_mxnetmodel_compute():
    assert images.sdk_training_image_uri("eu-west-1", "local") == (
        "520713654638.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-rl-mxnet:coach0.11.0-cpu-py3")
    assert images.sdk_inference_image_uri("us-west-2", "local_gpu").endswith("/sagemaker-mxnet:1.3-gpu-py3")


def test_the_region_comes_from_aws_region_then_aws_default_region(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert images.default_region() == "us-west-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert images.default_region() == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    assert images.default_region() == "ap-south-1"


@pytest.mark.parametrize(("value", "fast"), [(None, True), ("1", True), ("0", False), (" Stock ", False),
                                             ("off", False), ("yes", True)])
def test_the_fast_path_is_on_unless_the_container_variable_turns_it_off(value, fast):
    assert contract.fast_path_requested(value) is fast


def test_the_checkout_holds_the_build_contexts_and_presets(monkeypatch):
    monkeypatch.delenv(resources.SOURCE_DIR_ENV, raising=False)
    assert resources.source_dir() == REPO
    assert (resources.presets_dir() / f"{resources.DEFAULT_PRESET}.py").is_file()


def test_source_dir_env_points_at_another_checkout(monkeypatch, tmp_path):
    (tmp_path / "containers" / "training").mkdir(parents=True)
    (tmp_path / "containers" / "training" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "presets").mkdir()
    monkeypatch.setenv(resources.SOURCE_DIR_ENV, str(tmp_path))
    assert resources.containers_dir() == tmp_path / "containers"


def test_a_source_dir_without_the_build_contexts_says_what_to_point_at(monkeypatch, tmp_path):
    monkeypatch.setenv(resources.SOURCE_DIR_ENV, str(tmp_path))
    with pytest.raises(resources.ResourceError, match=f"set {resources.SOURCE_DIR_ENV} to a checkout"):
        resources.source_dir()


def test_the_work_folder_is_the_env_or_dot_smrl_here(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(resources.WORK_DIR_ENV, raising=False)
    assert resources.work_dir() == tmp_path / ".smrl"
    monkeypatch.setenv(resources.WORK_DIR_ENV, str(tmp_path / "elsewhere"))
    assert resources.work_dir() == tmp_path / "elsewhere"
