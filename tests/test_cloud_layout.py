"""A cloud job's artifacts go where SageMaker puts them, made from what local mode wrote."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from conftest import make_tar_gz, wait_for
from emulator.cloud_layout import (
    IntermediateUploads,
    cloud_output_archive,
    intermediate_files,
    job_prefix,
    upload_as_the_cloud_does,
)

LONG_NAME = ("data/checkpoint/0_Step-2449.ckpt.main_level.agent.filters.pre_network_filter.observation_filters."
             "observation.normalize_observation.srs")  # over tar's 100 characters: kept in a PAX header
LOCAL_OUTPUT = {"data/checkpoint/0_Step-0.ckpt": b"ckpt", "data/checkpoint/.coach_checkpoint": b"0", LONG_NAME: b"srs",
                "success": b""}


def _intermediate(local_dir: Path) -> None:
    """What local mode copies from /opt/ml/output/intermediate while the job runs."""
    (local_dir / "output" / "intermediate" / "gifs").mkdir(parents=True)
    (local_dir / "output" / "intermediate" / "worker_0.csv").write_bytes(b"Episode #,Training Reward\n1,20\n")
    (local_dir / "output" / "intermediate" / "gifs" / "e1.gif").write_bytes(b"GIF")


def test_the_job_folder_is_output_under_the_job_name():
    assert job_prefix("s3://bucket/", "job-1") == ("bucket", "job-1/output/")
    assert job_prefix("s3://bucket/runs/cartpole", "job-1") == ("bucket", "runs/cartpole/job-1/output/")


def test_the_clouds_output_archive_holds_what_was_in_output_data(tmp_path):
    packed = cloud_output_archive(make_tar_gz(tmp_path / "output.tar.gz", LOCAL_OUTPUT))
    with tarfile.open(fileobj=io.BytesIO(packed)) as tar:
        assert sorted(m.name for m in tar.getmembers()) == [
            "checkpoint/.coach_checkpoint", "checkpoint/0_Step-0.ckpt", LONG_NAME.removeprefix("data/")]


def test_intermediate_files_keep_their_path_below_intermediate(tmp_path):
    _intermediate(tmp_path)
    assert sorted(intermediate_files(tmp_path)) == ["gifs/e1.gif", "worker_0.csv"]


class RecordingS3:
    def __init__(self):
        self.objects: dict[tuple[str, str], bytes] = {}

    def upload_file(self, filename, bucket, key):
        self.objects[(bucket, key)] = Path(filename).read_bytes()

    def put_object(self, Bucket, Key, Body):
        self.objects[(Bucket, Key)] = Body


def test_a_cloud_jobs_artifacts_land_under_the_clouds_keys(tmp_path):
    make_tar_gz(tmp_path / "output.tar.gz", LOCAL_OUTPUT)
    make_tar_gz(tmp_path / "model.tar.gz", {"model.onnx": b"onnx"})
    _intermediate(tmp_path)
    s3 = RecordingS3()
    model = upload_as_the_cloud_does(s3, tmp_path, "s3://bucket/", "job-1")
    assert model == "s3://bucket/job-1/output/model.tar.gz"
    assert sorted(key for _, key in s3.objects) == [
        "job-1/output/intermediate/gifs/e1.gif", "job-1/output/intermediate/worker_0.csv",
        "job-1/output/model.tar.gz", "job-1/output/output.tar.gz"]



def test_intermediate_files_are_uploaded_while_the_job_runs_and_again_when_they_change(tmp_path):
    s3 = RecordingS3()
    folder = tmp_path / "output" / "intermediate"
    folder.mkdir(parents=True)
    key = ("bucket", "job-1/output/intermediate/worker_0.csv")
    with IntermediateUploads(s3, tmp_path, "s3://bucket/", "job-1", interval=0.05):
        (folder / "worker_0.csv").write_text("Episode #,Training Reward\n1,10\n")
        assert wait_for(lambda: key in s3.objects), "uploaded before the job ended"
        (folder / "worker_0.csv").write_text("Episode #,Training Reward\n1,10\n2,30\n")
        assert wait_for(lambda: s3.objects[key].endswith(b"2,30\n")), "the grown file uploaded again"
