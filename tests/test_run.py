"""`smrl-local run` with a real Jupyter kernel and the real S3 server: bad input gets one clear
message, and nothing is left behind (no kernel, no server)."""

from __future__ import annotations

import subprocess

import nbformat
import pytest

from emulator import contract
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


def test_host_aws_credentials_reach_neither_the_kernels_calls_nor_a_container(workdir, monkeypatch, training_image_ready):
    host_keys = {"AWS_ACCESS_KEY_ID": "AKIAHOSTENVKEY000001", "AWS_SECRET_ACCESS_KEY": "host-env-secret",
                 "AWS_SESSION_TOKEN": "host-env-token", "AWS_PROFILE": "host"}
    for name, value in host_keys.items():
        monkeypatch.setenv(name, value)
    home = workdir / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text("[host]\naws_access_key_id = AKIAHOSTFILEKEY00001\n"
                                               "aws_secret_access_key = host-file-secret\n")
    (home / ".aws" / "config").write_text("[profile host]\nregion = eu-north-1\n")
    monkeypatch.setenv("HOME", str(home))
    (workdir / "src").mkdir()
    (workdir / "src" / "show_env.py").write_text(
        "import os\nprint('CONTAINER', sorted(f'{k}={v}' for k, v in os.environ.items() if k.startswith('AWS')))\n")
    path = _notebook(
        workdir / "nb.ipynb",
        "import boto3, os\ncredentials = boto3.Session().get_credentials()\n"
        "print('KERNEL', credentials.access_key, credentials.secret_key, credentials.token, "
        "sorted(k for k in os.environ if k.startswith('AWS')))",
        "from sagemaker.rl import RLEstimator, RLToolkit, RLFramework\n"
        "estimator = RLEstimator(entry_point='show_env.py', source_dir='src', toolkit=RLToolkit.COACH, "
        "toolkit_version='0.11.0', framework=RLFramework.MXNET, role='r', instance_type='ml.m4.xlarge', "
        "instance_count=1)\nestimator.fit()\nprint('JOB', estimator._current_job_name)")
    result = run(path, output_dir=workdir / "runs", log=lambda line: None)

    cells = nbformat.read(result.executed_copy, as_version=4).cells
    kernel = "".join(o.get("text", "") for o in cells[0].outputs)
    assert f"KERNEL {contract.PLACEHOLDER_ACCESS_KEY} {contract.PLACEHOLDER_SECRET_KEY} None" in kernel
    job = "".join(o.get("text", "") for o in cells[1].outputs).split("JOB ")[-1].strip()
    container = (workdir / "work" / "logs" / f"{job}.log").read_text()
    assert f"AWS_ACCESS_KEY_ID={contract.PLACEHOLDER_ACCESS_KEY}" in container, container
    everything = kernel + container + result.executed_copy.read_text()
    secrets = [v for k, v in host_keys.items() if k != "AWS_PROFILE"]
    for secret in [*secrets, "AKIAHOSTFILEKEY00001", "host-file-secret", "eu-north-1"]:
        assert secret not in everything, f"{secret} reached the run"
