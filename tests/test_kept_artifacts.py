"""Jobs that share a file:// output path keep each one's archives: the SDK's own copy step
(`sagemaker.local.utils.move_to_destination`) writes them as in a real job, around the
session's before() and after()."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from sagemaker.local.utils import move_to_destination

from conftest import make_tar_gz
from emulator.kept_artifacts import JobNameReusedError, KeptArtifacts, shared_output_folder


def _sdk_writes(output: Path, tmp_path: Path, job: str, model: bytes) -> None:
    """What local mode does when a job ends: its compressed artifacts copied into output_path."""
    compressed = tmp_path / f"compressed-{job}"
    compressed.mkdir()
    make_tar_gz(compressed / "model.tar.gz", {"model.onnx": model})
    make_tar_gz(compressed / "output.tar.gz", {"data/log": job.encode()})
    move_to_destination(str(compressed), output.as_uri(), job, None)


def _job(output: Path, tmp_path: Path, job: str, model: bytes | None) -> Path | None:
    kept = KeptArtifacts(output, job)
    kept.before()
    if model is not None:
        _sdk_writes(output, tmp_path, job, model)
    return kept.after()


def _model(archive: Path) -> bytes:
    with tarfile.open(archive) as tar:
        return tar.extractfile("model.onnx").read()


def test_a_second_job_on_the_same_output_path_keeps_the_first_jobs_archives(tmp_path):
    output = tmp_path / "out"
    first = _job(output, tmp_path, "job-1", b"first model")
    second = _job(output, tmp_path, "job-2", b"second model")

    assert first == output / "job-1" / "output" / "model.tar.gz" and _model(first) == b"first model"
    assert second == output / "job-2" / "output" / "model.tar.gz" and _model(second) == b"second model"
    # The SDK's place holds the newest job's, for code that reads <output_path>/model.tar.gz.
    assert _model(output / "model.tar.gz") == b"second model"
    assert os.path.samefile(output / "model.tar.gz", second)
    with tarfile.open(output / "job-1" / "output" / "output.tar.gz") as tar:
        assert tar.extractfile("data/log").read() == b"job-1"


def test_kept_copies_are_hard_links_not_copies(tmp_path):
    output = tmp_path / "out"
    kept = _job(output, tmp_path, "job-1", b"model")
    assert os.stat(kept).st_nlink == 2


def test_a_job_that_writes_nothing_leaves_the_earlier_archives_in_place(tmp_path):
    output = tmp_path / "out"
    _job(output, tmp_path, "job-1", b"first model")
    assert _job(output, tmp_path, "job-2", None) is None
    assert _model(output / "model.tar.gz") == b"first model"
    assert not (output / "job-2").exists()


def test_an_archive_no_job_folder_holds_is_kept_before_it_is_replaced(tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    make_tar_gz(output / "model.tar.gz", {"model.onnx": b"from the plain SDK"})
    _job(output, tmp_path, "job-1", b"new model")
    (earlier,) = output.glob("earlier-*/output/model.tar.gz")
    assert _model(earlier) == b"from the plain SDK"
    assert _model(output / "model.tar.gz") == b"new model"


def test_a_job_name_used_twice_on_one_output_path_is_refused_and_changes_nothing(tmp_path):
    output = tmp_path / "out"
    _job(output, tmp_path, "job-1", b"first model")
    kept = KeptArtifacts(output, "job-1")
    with pytest.raises(JobNameReusedError, match="A job named job-1 already wrote its archives to .*new name"):
        kept.before()
    assert kept.after() is None
    assert _model(output / "model.tar.gz") == b"first model"
    assert sorted(p.name for p in output.iterdir()) == ["job-1", "model.tar.gz", "output.tar.gz"]


def test_only_file_output_paths_that_jobs_can_share_are_handled():
    assert shared_output_folder("file:///data/out", "job-1") == Path("/data/out")
    assert shared_output_folder("file:///data/out/job-1", "job-1") is None  # the job's own folder
    assert shared_output_folder("s3://bucket/out", "job-1") is None
