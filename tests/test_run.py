"""`smrl-local run` with a real Jupyter kernel and the real S3 server: bad input gets one clear
message, and nothing is left behind (no kernel, no server)."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from emulator.errors import UserError
from emulator.run import RunError, run

pytestmark = pytest.mark.integration  # a kernel and an S3 server per test: seconds each


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    leftover = subprocess.run(["pgrep", "-f", f"rclone serve s3.*{tmp_path}|ipykernel_launcher"],
                              capture_output=True, text=True)
    assert leftover.stdout == "", "a kernel or the S3 server was left running"


def _notebook(path, *sources):
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, str(path))
    return path


def test_a_notebook_sees_s3_sts_and_its_params_and_keeps_its_outputs(workdir):
    path = _notebook(workdir / "nb.ipynb",
                     "import boto3, sagemaker\nsession = sagemaker.Session()\nbucket = session.default_bucket()",
                     "boto3.client('s3').put_object(Bucket=bucket, Key='a/b.txt', Body=b'hi')\nprint(bucket, steps)",
                     "!aws s3 ls s3://$bucket/a/")
    result = run(path, {"steps": 7}, output_dir=workdir / "runs", log=lambda line: None)
    cells = nbformat.read(result.executed_copy, as_version=4).cells
    assert "sagemaker-us-west-2-000000000000 7" in cells[2].outputs[0].text
    assert "b.txt" in cells[3].outputs[0].text
    assert (workdir / "work" / "s3" / "sagemaker-us-west-2-000000000000" / "a" / "b.txt").read_bytes() == b"hi"


def test_a_cell_that_raises_is_named_with_its_line_and_cause(workdir):
    path = _notebook(workdir / "nb.ipynb", "x = 1", "y = 2\nraise ValueError('no reward file')")
    with pytest.raises(UserError, match=r"Cell 2 \(notebook cell 1\) of nb.ipynb failed at line 2: "
                                       r"ValueError: no reward file"):
        run(path, log=lambda line: None)


def test_a_kernel_that_dies_is_named_with_the_cell(workdir):
    path = _notebook(workdir / "nb.ipynb", "import os\nos._exit(3)")
    with pytest.raises(UserError, match=r"The kernel died \(exit status 3\) while running cell 1"):
        run(path, log=lambda line: None)


def test_an_aws_service_without_a_local_stand_in_is_refused_naming_it(workdir):
    script = workdir / "job.py"
    script.write_text("import boto3\nboto3.client('ec2').describe_instances()\n")
    with pytest.raises(RunError, match="job.py exited with status 1"):
        run(script, log=lambda line: None)


def test_a_bucket_that_does_not_exist_is_s3s_own_error(workdir):
    path = _notebook(workdir / "nb.ipynb", "import boto3\nboto3.client('s3').get_object(Bucket='no-such-bucket', Key='k')")
    with pytest.raises(UserError, match="NoSuchBucket"):
        run(path, log=lambda line: None)
