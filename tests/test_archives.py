"""Model archives are checked from their headers before anything is unpacked: real tar files
built here, each refused with one line naming the archive, the problem and the fix."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from conftest import gzip_bomb, make_tar_gz
from emulator import archives
from emulator.archives import Limits, ModelArchiveError, check_model_archive

GIB = 1024**3


def _tar_gz(path: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def _refusal(path: Path, limits: Limits | None = None) -> str:
    with pytest.raises(ModelArchiveError) as refused:
        check_model_archive(path, limits)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message
    return message


def test_a_model_archive_as_training_writes_it_passes(tmp_path):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"onnx" * 100, "model-symbol.json": b"{}"})
    assert check_model_archive(archive) == archives.ArchiveSummary(files=2, unpacked_bytes=402)


def test_a_model_with_folders_passes(tmp_path):
    archive = _tar_gz(tmp_path / "model.tar.gz", (_member("code", tarfile.DIRTYPE), None),
                      (_member("code/inference.py"), b"def model_fn(d): pass\n"), (_member("./model.onnx"), b"x"))
    assert check_model_archive(archive).files == 3


def test_a_gzip_bomb_is_refused_from_its_first_header_without_unpacking(tmp_path):
    bomb = gzip_bomb(tmp_path / "model.tar.gz", int(5.5 * 1000**3))
    assert bomb.stat().st_size < 8 * 1024**2
    message = _refusal(bomb)
    assert "unpacks to more than 4 GiB" in message and "SMRL_MODEL_MAX_GIB=N" in message
    assert list(tmp_path.iterdir()) == [bomb]


def test_many_members_adding_up_past_the_limit_are_refused_at_the_limit(tmp_path):
    archive = gzip_bomb(tmp_path / "model.tar.gz", 40 * 1024**2, members=8)
    assert "unpacks to more than 0.015625 GiB" in _refusal(archive, Limits(max_gib=1 / 64, max_ratio=10**6))


def test_a_bomb_split_into_many_members_is_refused_by_its_ratio_long_before_the_size_limit(tmp_path):
    bomb = gzip_bomb(tmp_path / "model.tar.gz", int(5.5 * 1000**3), members=55)
    message = _refusal(bomb)
    assert "unpacks to over 100 times its size (600,000,000 bytes so far from" in message
    assert "as a gzip bomb does" in message and "SMRL_MODEL_MAX_RATIO=N" in message


def test_a_high_ratio_is_accepted_below_the_floor(tmp_path):
    zeros = gzip_bomb(tmp_path / "model.tar.gz", 16 * 1024**2)
    assert check_model_archive(zeros).unpacked_bytes == 16 * 1024**2


def test_too_many_members_are_refused(tmp_path):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {f"f{i}": b"" for i in range(11)})
    message = _refusal(archive, Limits(max_files=10))
    assert "more than 10 files" in message and "SMRL_MODEL_MAX_FILES=N" in message


def test_the_environment_raises_the_limits(tmp_path, monkeypatch):
    archive = make_tar_gz(tmp_path / "model.tar.gz", {f"f{i}": b"" for i in range(3)})
    monkeypatch.setenv("SMRL_MODEL_MAX_FILES", "2")
    assert "more than 2 files" in _refusal(archive)
    monkeypatch.setenv("SMRL_MODEL_MAX_FILES", "3")
    assert check_model_archive(archive).files == 3
    monkeypatch.setenv("SMRL_MODEL_MAX_GIB", "0.5")
    monkeypatch.setenv("SMRL_MODEL_MAX_RATIO", "2000")
    assert Limits.from_environment() == Limits(max_gib=0.5, max_files=3, max_ratio=2000)
    assert Limits.from_environment().max_bytes == GIB // 2


@pytest.mark.parametrize("value", ["-1", "0", "lots"])
@pytest.mark.parametrize("name", ["SMRL_MODEL_MAX_GIB", "SMRL_MODEL_MAX_FILES", "SMRL_MODEL_MAX_RATIO"])
def test_a_limit_that_is_not_a_positive_number_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ModelArchiveError, match=f"{name}='{value}' is not a positive number"):
        Limits.from_environment()


@pytest.mark.parametrize(("name", "expected"), [
    ("../evil.py", "leaves the model folder"),
    ("code/../../evil.py", "leaves the model folder"),
    ("/etc/cron.d/evil", "has an absolute name"),
    ("C:/evil", "has an absolute name"),
])
def test_members_that_would_land_outside_the_folder_are_refused(tmp_path, name, expected):
    archive = _tar_gz(tmp_path / "model.tar.gz", (_member("model.onnx"), b"x"), (_member(name), b"x"))
    message = _refusal(archive)
    assert repr(name) in message and expected in message and "tar -czf model.tar.gz -C MODEL_FOLDER ." in message


@pytest.mark.parametrize(("kind", "linkname", "expected"), [
    (tarfile.SYMTYPE, "/etc/passwd", "is a symbolic link (to '/etc/passwd')"),
    (tarfile.SYMTYPE, "model.onnx", "is a symbolic link (to 'model.onnx')"),
    (tarfile.LNKTYPE, "model.onnx", "is a hard link (to 'model.onnx')"),
    (tarfile.CHRTYPE, "", "is a device file"),
    (tarfile.BLKTYPE, "", "is a device file"),
    (tarfile.FIFOTYPE, "", "is a FIFO"),
])
def test_links_devices_and_fifos_are_refused(tmp_path, kind, linkname, expected):
    archive = _tar_gz(tmp_path / "model.tar.gz", (_member("model.onnx"), b"x"), (_member("other", kind, linkname), None))
    message = _refusal(archive)
    assert expected in message and "only plain files and folders" in message


def test_a_file_that_is_not_gzip_is_refused(tmp_path):
    plain_tar = tmp_path / "model.tar.gz"
    with tarfile.open(plain_tar, "w") as tar:
        info = tarfile.TarInfo("model.onnx")
        tar.addfile(info, io.BytesIO(b""))
    assert "is not gzip-compressed" in _refusal(plain_tar)
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    assert "is not gzip-compressed" in _refusal(text)


def test_a_gzip_that_is_not_a_tar_is_refused(tmp_path):
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(gzip.compress(b"just some text, no tar headers here" * 40))
    assert "damaged or not a tar inside its gzip" in _refusal(archive)


def test_a_truncated_archive_is_refused(tmp_path):
    whole = make_tar_gz(tmp_path / "whole.tar.gz", {"model.params": os.urandom(200_000)})
    cut = tmp_path / "model.tar.gz"
    cut.write_bytes(whole.read_bytes()[:50_000])
    assert "damaged or not a tar inside its gzip" in _refusal(cut)


def test_an_empty_archive_is_refused(tmp_path):
    empty = make_tar_gz(tmp_path / "model.tar.gz", {})
    assert "is empty: no model in it" in _refusal(empty)
    zero_bytes = tmp_path / "zero.tar.gz"
    zero_bytes.write_bytes(b"")
    assert "is not gzip-compressed" in _refusal(zero_bytes)


def test_a_missing_archive_or_a_folder_is_refused(tmp_path):
    assert "there is nothing there" in _refusal(tmp_path / "model.tar.gz")
    assert "there is a folder there" in _refusal(tmp_path)


def test_the_bomb_helper_makes_what_it_says(tmp_path):
    bomb = gzip_bomb(tmp_path / "b.tar.gz", 3 * 1024**2 + 5, members=2)
    with tarfile.open(bomb) as tar:
        sizes = [(m.name, m.size, len(tar.extractfile(m).read())) for m in tar.getmembers()]
    assert sizes == [("part-0.bin", 1572866, 1572866), ("part-1.bin", 1572866, 1572866)]


# -- where local mode unpacks a served model ----------------------------------------------

@pytest.fixture
def serving_container(tmp_path, monkeypatch):
    from sagemaker.local.image import _SageMakerContainer

    from emulator.containers import ServingContainer
    from emulator.session import local_session

    monkeypatch.setattr(_SageMakerContainer, "_get_compose_cmd_prefix", staticmethod(lambda: ["docker-compose"]))
    container = ServingContainer("local", 1, "image:tag", local_session(work_dir=tmp_path / "work"))
    container.container_root = str(tmp_path / "root")
    return container


def test_the_sdk_unpacks_no_served_bomb_on_the_host(serving_container, tmp_path, monkeypatch):
    """estimator.deploy() / Model(model_data="file://...").deploy() reach this SDK step. (A
    small bomb under a small limit: were the check gone, this test would unpack 64 MiB, not GBs.)"""
    monkeypatch.setenv("SMRL_MODEL_MAX_GIB", "0.01")
    models = tmp_path / "models"
    models.mkdir()
    bomb = gzip_bomb(models / "model.tar.gz", 64 * 1024**2)
    with pytest.raises(ModelArchiveError, match="unpacks to more than 0.01 GiB"):
        serving_container._prepare_serving_volumes(bomb.as_uri())
    assert list(models.iterdir()) == [bomb]


def test_the_sdk_unpacks_no_member_leaving_the_folder(serving_container, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    archive = make_tar_gz(models / "model.tar.gz", {"model.onnx": b"x", "../escaped.py": b"x"})
    with pytest.raises(ModelArchiveError, match="leaves the model folder"):
        serving_container._prepare_serving_volumes(archive.as_uri())
    assert list(models.iterdir()) == [archive] and not (tmp_path / "escaped.py").exists()


def test_a_served_file_that_is_no_tar_fails_on_the_host_not_in_the_container(serving_container, tmp_path):
    model = tmp_path / "model.tar.gz"
    model.write_bytes(b"PK\x03\x04 a zip file, not a tar.gz")
    with pytest.raises(ModelArchiveError, match="is not gzip-compressed"):
        serving_container._prepare_serving_volumes(model.as_uri())


def test_a_good_served_archive_is_unpacked_as_before(serving_container, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    archive = make_tar_gz(models / "model.tar.gz", {"model.onnx": b"onnx"})
    (volume,) = serving_container._prepare_serving_volumes(archive.as_uri())
    assert (models / "model.onnx").read_bytes() == b"onnx"
    assert volume.container_dir == "/opt/ml/model"
