"""What a job's code sees in the container, as in the cloud: source_dir with the
dependencies beside the entry point, requirements.txt installed, nothing of the user's
folders writable. Real SDK, real images, real engine.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

import emulator
from conftest import job_container_count
from emulator.jobcode import JobCodeError

JOB = Path(__file__).parent / "fixtures" / "job_code"


def _estimator(source_dir: Path, tmp_path: Path) -> RLEstimator:
    return RLEstimator(
        entry_point="train.py", source_dir=str(source_dir), dependencies=[str(JOB / "shared_lib")],
        toolkit=RLToolkit.COACH, toolkit_version="0.11.0", framework=RLFramework.MXNET,
        role="any-string", instance_type="local", instance_count=1, output_path=(tmp_path / "out").as_uri(),
        sagemaker_session=emulator.local_session(work_dir=tmp_path / "work"),
    )


def test_dependencies_and_requirements_are_there_and_the_code_is_read_only(
    training_image_ready, docker_engine, tmp_path, capfd
):
    before = {p: p.read_bytes() for p in (JOB / "src").iterdir()}
    _estimator(JOB / "src", tmp_path).fit()
    log = capfd.readouterr().out
    assert "JOB tabulate 0.9.0, shared_lib 42" in log
    assert "JOB code folder is read-only (Read-only file system)" in log
    assert {p: p.read_bytes() for p in (JOB / "src").iterdir()} == before
    with tarfile.open(tmp_path / "out" / "output.tar.gz") as tar:
        assert "success" in {Path(m.name).name for m in tar.getmembers()}
    assert not (tmp_path / "work" / "code").exists() or not any((tmp_path / "work" / "code").iterdir())


def test_a_requirement_that_cannot_be_resolved_fails_fit_naming_it_before_any_container(
    docker_engine, training_image_ready, tmp_path
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "train.py").write_text("print('never runs')\n")
    (source / "requirements.txt").write_text("smrl-no-such-package-anywhere==1.0\n")
    before = job_container_count(docker_engine)
    with pytest.raises(JobCodeError, match="cannot be resolved: .*smrl-no-such-package-anywhere==1.0"):
        _estimator(source, tmp_path).fit()
    assert job_container_count(docker_engine) == before


def test_a_failing_plain_fit_names_the_exception_the_users_line_and_the_kept_log(
    docker_engine, training_image_ready, tmp_path
):
    source = tmp_path / "src"
    source.mkdir()
    (source / "my_env.py").write_text("def step(state):\n    return state + reward\n")
    (source / "train.py").write_text("import my_env\nmy_env.step(1)\n")
    before = job_container_count(docker_engine)
    with pytest.raises(emulator.TrainingJobFailed) as raised:
        _estimator(source, tmp_path).fit()
    message = str(raised.value)
    assert "failed: NameError: name 'reward' is not defined" in message.splitlines()[0]
    assert "  in your code: my_env.py:2 in step" in message
    log = Path(message.splitlines()[-1].removeprefix("  full log: "))
    assert log.parent == tmp_path / "work" / "logs" and "Traceback" in log.read_text()
    assert job_container_count(docker_engine) == before
