"""Checkpoints, resume and the spot-interruption drill, with real jobs in the training image.

The drill stops a job the way SageMaker stops a spot instance (SIGTERM, SIGKILL after the
grace period) and restarts it from its checkpoint folder; with the replay memory in the
checkpoint, the same seed then gives the very episodes of a job never stopped.
"""
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

from conftest import job_container_count
from emulator import contract, local_session
from emulator.training import TrainingError, train
from test_conformance import copy_case

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
STEPS = 6000  # long enough that an interruption 5 s into the job lands before its end
SEED = {"seed": 1}


def _lines(log: Path, kind: str) -> list[str]:
    """Coach's Training> or Testing> lines without the timestamp: what the job did, step by step."""
    return [re.sub(r".*?Episode=", "Episode=", line) for line in log.read_text().splitlines() if f"{kind}>" in line]


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def plain_and_drilled(docker_engine, training_image_ready, tmp_path_factory):
    """The CartPole DQN preset with seed 1 for STEPS steps: once straight through, once
    interrupted 5 s into its first attempt."""
    out = tmp_path_factory.mktemp("drill")
    before = job_container_count(docker_engine)
    plain = train(steps=STEPS, hyperparameters=SEED, output_dir=out / "plain", build=False, log=_quiet)
    drilled = train(steps=STEPS, hyperparameters=SEED, output_dir=out / "drilled", build=False, log=_quiet,
                    interrupt_after=[5])
    assert job_container_count(docker_engine) == before
    return plain, drilled


def test_an_interrupted_job_resumes_and_takes_the_very_steps_of_an_uninterrupted_one(plain_and_drilled):
    plain, drilled = plain_and_drilled
    [interruption] = drilled.interruptions
    assert interruption.exit_code == contract.STOPPED_EXIT_CODE and not interruption.killed
    assert interruption.resumed.startswith(contract.RESUMED_LOG)
    for restored in ("step, episode and training counters", "main_level/agent/main/target", "optimiser state",
                     "exploration (epsilon", "random number generators", "replay memory"):
        assert restored in interruption.resumed
    assert _lines(drilled.log_file, "Training") == _lines(plain.log_file, "Training"), "no step lost or repeated"
    assert _lines(drilled.log_file, "Testing") == _lines(plain.log_file, "Testing")
    assert drilled.model_data.is_file()


def test_the_stopped_job_checkpointed_at_an_episode_end_and_said_so(plain_and_drilled):
    _, drilled = plain_and_drilled
    text = drilled.log_file.read_text()
    assert re.search(rf"{contract.STOPPED_LOG} at env step [\d,]+ at the end of an episode", text)
    assert "smrl-local: attempt 2: 5 checkpoint files" in text or "smrl-local: attempt 2: 6 checkpoint files" in text


def test_a_finished_job_resumed_trains_the_asked_steps_more(plain_and_drilled, tmp_path):
    plain, _ = plain_and_drilled
    output = plain.output_dir.parent
    more = train(steps=1000, hyperparameters=SEED, output_dir=output, build=False, log=_quiet, resume="latest")
    text = more.log_file.read_text()
    finished_at = int(re.search(r"Saved checkpoint \d+ at env step ([\d,]+) \(done\)",
                                plain.log_file.read_text()).group(1).replace(",", ""))
    assert f"{contract.RESUMED_LOG} " in text and "a finished job" in text
    assert "Starting heatup" not in text, "the replay memory came back: no heat-up"
    ended_at = int(re.search(r"Saved checkpoint \d+ at env step ([\d,]+) \(done\)", text).group(1).replace(",", ""))
    # Coach ends on an evaluation period's end: up to ten 200-step episodes past the budget.
    assert finished_at + 1000 <= ended_at <= finished_at + 1000 + 2000


def _checkpoints_copy(job_dir: Path, target: Path) -> Path:
    shutil.copytree(job_dir / "checkpoints", target)
    return target


def _resume_from(folder: Path, tmp_path: Path) -> Path:
    """Trains 500 steps from the checkpoints in `folder`; returns the job's log."""
    out = tmp_path / "out"
    (out / "job").mkdir(parents=True)
    (out / "job" / "checkpoints").symlink_to(folder)
    result = train(steps=500, hyperparameters=SEED, output_dir=out, build=False, log=_quiet, resume="job")
    return result.log_file


def test_a_damaged_newest_checkpoint_is_named_and_the_one_before_it_restored(plain_and_drilled, tmp_path):
    _, drilled = plain_and_drilled
    folder = _checkpoints_copy(drilled.output_dir, tmp_path / "ckpt")
    newest = sorted(folder.glob("*.smrl-state.pkl"))[-1]
    newest.write_bytes(newest.read_bytes()[:-100] + b"x" * 100)
    text = _resume_from(folder, tmp_path).read_text()
    assert f"{newest.name} is damaged (its sha256 differs from the manifest's); trying the one before it" in text
    assert f"{contract.RESUMED_LOG} 0_Step-" in text


def test_a_checkpoint_missing_a_file_falls_back_and_none_usable_fails_with_the_cause(plain_and_drilled, tmp_path):
    _, drilled = plain_and_drilled
    folder = _checkpoints_copy(drilled.output_dir, tmp_path / "ckpt")
    for weights in folder.glob("*.main.online"):
        weights.unlink()  # as if killed while Coach wrote them
    with pytest.raises(TrainingError) as failed:
        _resume_from(folder, tmp_path)
    message = str(failed.value)
    assert re.search(r"No checkpoint in /opt/ml/input/data/checkpoint can be restored: checkpoint 1_Step-\d+\.ckpt: "
                     r"1_Step-\d+\.ckpt\.main_level\.agent\.main\.online is missing; checkpoint 0_Step-", message)
    assert "Nothing was trained from scratch instead" in message


def _public_case(rl_examples, tmp_path) -> Path:
    case = copy_case(rl_examples, tmp_path)
    shutil.copy(FIXTURES / "train_resume_public.py", case / "src")
    return case


def _public_job(case: Path, entry_point: str, steps: int, work: Path, output: Path, **kwargs):
    return RLEstimator(entry_point=entry_point, source_dir=str(case / "src"),
                       dependencies=[str(case / "common" / "sagemaker_rl")], toolkit=RLToolkit.COACH,
                       toolkit_version=contract.SDK_COACH_VERSION, framework=RLFramework.MXNET,
                       role=contract.PLACEHOLDER_ROLE, instance_type="local", instance_count=1,
                       output_path=output.as_uri(), sagemaker_session=local_session(work_dir=work),
                       hyperparameters={"RLCOACH_PRESET": "preset-cartpole-dqn",
                                        "rl.improve_steps:EnvironmentSteps": steps}, **kwargs)


def test_the_public_launcher_resumes_from_a_checkpoint_channel_and_warns_when_it_ignores_one(
        rl_examples, plain_and_drilled, docker_engine, tmp_path, capfd):
    _, drilled = plain_and_drilled
    case = _public_case(rl_examples, tmp_path)
    first = _public_job(case, "train-coach.py", 1500, tmp_path / "work", tmp_path / "out")
    first.fit({"checkpoint": (drilled.output_dir / "checkpoints").as_uri()}, job_name="public-first")
    out = capfd.readouterr().out
    assert "WARNING: a 'checkpoint' input channel is mounted at /opt/ml/input/data/checkpoint, but this entry " \
           "point passes no checkpoint_restore_dir to Coach, so training starts from scratch." in out

    with tarfile.open(Path(first.model_data.removeprefix("file://")).parent / contract.OUTPUT_ARCHIVE) as archive:
        archive.extractall(tmp_path / "first-output", filter="data")
    first_episodes = [int(e) for e in re.findall(r"Training>.*?Episode=(\d+)", out)]
    second = _public_job(case, "train_resume_public.py", 500, tmp_path / "work", tmp_path / "out")
    second.fit({"checkpoint": (tmp_path / "first-output" / "data" / "checkpoint").as_uri()}, job_name="public-second")
    out = capfd.readouterr().out
    assert f"{contract.RESUMED_LOG} " in out and "replay memory (" in out
    assert min(int(e) for e in re.findall(r"Training>.*?Episode=(\d+)", out)) == max(first_episodes) + 1


def test_a_python_jobs_checkpoint_uri_is_restored_synced_and_resumed_after_a_drill(
        docker_engine, training_image_ready, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SMRL_INTERRUPT_AFTER", "5")
    uri = tmp_path / "my-checkpoints"
    estimator = RLEstimator(entry_point="train_coach.py", source_dir="presets", toolkit=RLToolkit.COACH,
                            toolkit_version=contract.SDK_COACH_VERSION, framework=RLFramework.MXNET,
                            role=contract.PLACEHOLDER_ROLE, instance_type="local", instance_count=1,
                            output_path=(tmp_path / "out").as_uri(),
                            sagemaker_session=local_session(work_dir=tmp_path / "work"),
                            checkpoint_s3_uri=uri.as_uri(), use_spot_instances=True, max_run=600, max_wait=1200,
                            hyperparameters={"RLCOACH_PRESET": "preset-cartpole-dqn", "seed": 1,
                                             contract.IMPROVE_STEPS_PARAM: STEPS})
    estimator.fit(job_name="python-drill")
    out = capfd.readouterr().out
    assert "smrl-local: interruption 1: SIGTERM 5 s into attempt 1, exited 143" in out
    assert f"{contract.RESUMED_LOG} 0_Step-" in out
    manifests = sorted(uri.glob("*.smrl.json"))
    assert [m.name.split("_")[0] for m in manifests] == ["0", "1"], "both checkpoints reached checkpoint_s3_uri"
    assert not (tmp_path / "work" / "checkpoints" / "python-drill").exists(), "the mounted copy is removed"


SPOT_SCRIPT = """
import boto3
from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

s3 = boto3.client("s3")
s3.create_bucket(Bucket="my-rl-bucket")
estimator = RLEstimator(entry_point="train_coach.py", source_dir="{presets}", toolkit=RLToolkit.COACH,
                        toolkit_version="0.11.0", framework=RLFramework.MXNET, role="SageMakerRole",
                        instance_type="ml.c5.xlarge", instance_count=1, output_path="s3://my-rl-bucket/out",
                        use_spot_instances=True, max_run=3600, max_wait=7200,
                        checkpoint_s3_uri="s3://my-rl-bucket/spot/checkpoints",
                        hyperparameters={{"RLCOACH_PRESET": "preset-cartpole-dqn", "seed": 1,
                                          "rl.improve_steps:EnvironmentSteps": {steps}}})
estimator.fit()
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="my-rl-bucket", Prefix="spot/checkpoints/")["Contents"]]
print("MANIFESTS", sorted(k.rsplit("/", 1)[-1] for k in keys if k.endswith(".smrl.json")))
"""


def test_a_cloud_script_under_run_with_the_drill_keeps_its_checkpoints_in_the_local_s3(
        docker_engine, training_image_ready, tmp_path, monkeypatch):
    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path / "work"))
    script = tmp_path / "spot.py"
    script.write_text(SPOT_SCRIPT.format(presets=Path(__file__).parent.parent / "presets", steps=STEPS))
    done = subprocess.run([sys.executable, "-m", "emulator.cli", "run", str(script), "--interrupt-after", "5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "smrl-local: interruption 1: SIGTERM 5 s into attempt 1, exited 143" in done.stdout
    assert f"{contract.RESUMED_LOG} 0_Step-" in done.stdout
    assert re.search(r"MANIFESTS \['0_Step-\d+\.ckpt\.smrl\.json', '1_Step-\d+\.ckpt\.smrl\.json'\]", done.stdout)


def test_a_resumed_process_continues_with_identical_weights_optimiser_rngs_and_observations(
        docker_engine, training_image_ready, tmp_path):
    """Beyond the log lines: after every training step from the stop to the end, the
    resumed process's weights, Adam moments and counts, numpy RNG, observation, epsilon and
    replay memory size are bit for bit those of the process that never stopped."""
    checkpoints, out = tmp_path / "checkpoints", tmp_path / "out"
    checkpoints.mkdir()
    out.mkdir()
    for mode in ("first", "resume"):
        if mode == "resume":  # keep what a SIGTERM at STOP leaves: the first checkpoint only
            for later in [p for p in checkpoints.iterdir() if not p.name.startswith(("0_", "."))]:
                later.unlink()
        docker_engine.containers.run(
            training_image_ready, ["python3", "/check/check_resume_exact.py", mode, "1200", f"/out/{mode}.json"],
            entrypoint=[], working_dir="/opt/ml/code", network_mode="none", remove=True,
            volumes={str(FIXTURES): {"bind": "/check", "mode": "ro"},
                     str(Path(__file__).parent.parent / "presets"): {"bind": "/opt/ml/code", "mode": "ro"},
                     str(checkpoints): {"bind": str(contract.CHECKPOINT_LOCAL_DIR), "mode": "rw"},
                     str(out): {"bind": "/out", "mode": "rw"}})
    first = json.loads((out / "first.json").read_text())
    after_stop = first[first.index("STOP") + 1:]
    resumed = json.loads((out / "resume.json").read_text())
    assert len(after_stop) > 1000
    assert resumed == after_stop
