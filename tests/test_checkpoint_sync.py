"""SageMaker's checkpoint contract for local jobs (emulator.checkpoint_sync), the SDK patch that
lets it through local mode, and the drill's plan: no Docker needed."""


import pytest
from sagemaker.estimator import _TrainingJob
from sagemaker.local import LocalSession
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

from conftest import wait_for
from emulator import contract
from emulator.checkpoint_sync import CheckpointConfigError, CheckpointSync, remember_target, rescue
from emulator.inputs import InputError, parse_interrupt_plan
from emulator.interruptions import Interruption
from emulator.s3 import LocalS3
from emulator.session import ATTEMPT_LOG, attach_resume_lines, local_session
from emulator.training import checkpoints_of


def test_a_file_uri_is_restored_into_the_folder_before_the_job(tmp_path):
    uri = tmp_path / "uri"
    (uri / "sub").mkdir(parents=True)
    (uri / "0_Step-10.ckpt.smrl.json").write_text("{}")
    (uri / "sub" / "x").write_bytes(b"12345")
    restored = CheckpointSync(uri.as_uri(), tmp_path / "mounted").restore()
    assert (restored.files, restored.bytes) == (2, 7)
    assert (tmp_path / "mounted" / "sub" / "x").read_bytes() == b"12345"


def test_files_the_job_writes_are_uploaded_while_it_runs_and_once_more_at_the_end(tmp_path):
    uri, folder = tmp_path / "uri", tmp_path / "mounted"
    sync = CheckpointSync(uri.as_uri(), folder, interval=0.05)
    sync.restore()
    with sync:
        (folder / "0_Step-5.ckpt.online").write_bytes(b"a")
        assert wait_for(lambda: (uri / "0_Step-5.ckpt.online").is_file()), "uploaded while running"
        (folder / "1_Step-9.ckpt.online.partial").write_bytes(b"half")
        (folder / "1_Step-9.ckpt.smrl.json").write_text("last")
        sync.interval = 60  # what the job writes last goes with the final sync
    assert (uri / "1_Step-9.ckpt.smrl.json").read_text() == "last"
    assert not (uri / "1_Step-9.ckpt.online.partial").exists(), "files still being written wait for their name"


def test_restored_files_are_not_sent_back_unchanged(tmp_path):
    uri = tmp_path / "uri"
    uri.mkdir()
    (uri / "a").write_text("1")
    sync = CheckpointSync(uri.as_uri(), tmp_path / "mounted")
    sync.restore()
    assert sync.upload_changed() == 0


def test_an_s3_uri_of_the_local_s3_is_restored_and_synced(tmp_path):
    with LocalS3(tmp_path / "s3") as s3:
        client = s3.client()
        client.create_bucket(Bucket="bucket")
        client.put_object(Bucket="bucket", Key="jobs/ckpt/0_Step-1.ckpt.smrl.json", Body=b"{}")
        sync = CheckpointSync("s3://bucket/jobs/ckpt/", tmp_path / "mounted", client, interval=0.05)
        assert sync.restore().files == 1
        with sync:
            (tmp_path / "mounted" / "1_Step-2.ckpt.smrl.json").write_text("{}")
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="bucket")["Contents"]]
    assert sorted(keys) == ["jobs/ckpt/0_Step-1.ckpt.smrl.json", "jobs/ckpt/1_Step-2.ckpt.smrl.json"]


@pytest.mark.parametrize("uri", ["/abs/folder", "gs://bucket/x", "http://example.com/ckpt"])
def test_a_checkpoint_uri_that_is_neither_file_nor_s3_is_refused_with_the_fix(uri, tmp_path):
    with pytest.raises(CheckpointConfigError, match="file:///absolute/folder or s3://bucket/prefix"):
        CheckpointSync(uri, tmp_path)


def _estimator(session, **kwargs):
    return RLEstimator(entry_point="train_coach.py", source_dir="presets", toolkit=RLToolkit.COACH,
                       toolkit_version=contract.SDK_COACH_VERSION, framework=RLFramework.MXNET,
                       role=contract.PLACEHOLDER_ROLE, instance_count=1, instance_type="local",
                       sagemaker_session=session, **kwargs)


def test_checkpoint_and_spot_arguments_reach_local_jobs_of_our_sessions(tmp_path):
    estimator = _estimator(local_session(work_dir=tmp_path), checkpoint_s3_uri="file:///tmp/ckpt",
                           checkpoint_local_path="/opt/ml/checkpoints", use_spot_instances=True,
                           max_run=3600, max_wait=7200)
    train_args: dict = {}
    _TrainingJob._add_spot_checkpoint_args(True, estimator, train_args)
    assert train_args == {"use_spot_instances": True, "checkpoint_s3_uri": "file:///tmp/ckpt",
                          "checkpoint_local_path": "/opt/ml/checkpoints"}


def test_other_local_sessions_keep_the_sdks_refusal():
    session = LocalSession.__new__(LocalSession)  # only its type matters to the check
    fake = type("Estimator", (), {"sagemaker_session": session, "use_spot_instances": False,
                                  "checkpoint_s3_uri": "s3://b/c", "checkpoint_local_path": None})()
    with pytest.raises(ValueError, match="not supported in local mode"):
        _TrainingJob._add_spot_checkpoint_args(True, fake, {})


@pytest.mark.parametrize(("text", "plan"), [(None, []), ("", []), ("30", [30.0]), ("30,45.5", [30.0, 45.5])])
def test_an_interrupt_plan_is_seconds_into_each_attempt(text, plan):
    assert parse_interrupt_plan(text) == plan


@pytest.mark.parametrize("text", ["0", "-5", "soon", "30,,x", "inf", "nan"])
def test_an_interrupt_plan_that_is_not_positive_seconds_is_refused(text):
    with pytest.raises(InputError, match="number of seconds > 0"):
        parse_interrupt_plan(text)


def test_the_drill_plan_comes_from_the_environment_for_python_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("SMRL_INTERRUPT_AFTER", "20,25")
    assert local_session(work_dir=tmp_path).interrupt_after == [20.0, 25.0]
    assert local_session(work_dir=tmp_path, interrupt_after=[]).interrupt_after == []


def test_each_interruption_gets_the_resume_line_of_the_attempt_after_it(tmp_path):
    log = tmp_path / "job.log"
    log.write_text(f"{ATTEMPT_LOG} 1: ...\ntraining\n{ATTEMPT_LOG} 2: ...\n"
                   f"{contract.RESUMED_LOG} 0_Step-100.ckpt at env step 100\n{ATTEMPT_LOG} 3: ...\nnothing\n")
    first, second = Interruption(attempt=1, after_s=5), Interruption(attempt=2, after_s=5)
    attach_resume_lines([first, second], log)
    assert first.resumed == f"{contract.RESUMED_LOG} 0_Step-100.ckpt at env step 100"
    assert second.resumed is None
    assert "restored no checkpoint: it trained from scratch" in Interruption(attempt=3, after_s=1, stopped_in_s=0.5, exit_code=143).describe()


def test_resume_names_the_jobs_that_kept_checkpoints(tmp_path):
    (tmp_path / "job-a" / "checkpoints").mkdir(parents=True)
    (tmp_path / "job-a" / "checkpoints" / "0_Step-9.ckpt.smrl.json").write_text("{}")
    (tmp_path / "job-b").mkdir()
    assert checkpoints_of(tmp_path, "job-a") == (tmp_path / "job-a" / "checkpoints").resolve()
    with pytest.raises(InputError, match=r"job-b kept no checkpoints\. Jobs with checkpoints in .*: job-a"):
        checkpoints_of(tmp_path, "job-b")
    with pytest.raises(InputError, match="is no job"):
        checkpoints_of(tmp_path, "job-c")


def test_a_killed_jobs_last_checkpoints_are_sent_to_its_file_uri_before_the_sweep_deletes_them(tmp_path):
    job, uri = tmp_path / "work" / "checkpoints" / "job-1", tmp_path / "uri"
    remember_target(job, uri.as_uri())
    (job / "attempt-1").mkdir()
    (job / "attempt-2").mkdir()
    (job / "attempt-1" / "0_Step-5.ckpt.smrl.json").write_text("old")
    (job / "attempt-2" / "1_Step-9.ckpt.smrl.json").write_text("written after the last sync")
    assert rescue(job) == f"sent 1 checkpoint files a killed job wrote after its last sync to {uri.as_uri()}"
    assert (uri / "1_Step-9.ckpt.smrl.json").read_text() == "written after the last sync"


def test_a_killed_jobs_s3_checkpoints_cannot_be_sent_and_the_line_says_so(tmp_path):
    remember_target(tmp_path / "job-1", "s3://bucket/ckpt")
    (tmp_path / "job-1" / "attempt-1").mkdir()
    assert "not sent to s3://bucket/ckpt" in rescue(tmp_path / "job-1")
    assert rescue(tmp_path / "no-such-job") is None
