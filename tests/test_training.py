"""Training in local mode, end to end: real images, real SDK, real Docker engine.

The slow part (CartPole DQN to its default budget, about a minute) runs once per session
and the tests below read its output. Every job must leave no container behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from conftest import job_container_count as _container_count
from emulator.training import TrainingError, train

FIXTURES = Path(__file__).parent / "fixtures"


def _members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name.lstrip("./"): member for member in tar.getmembers()}


def _extract(archive: Path, target: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


# -- the default job ---------------------------------------------------------------------

def test_dqn_preset_reaches_evaluation_reward_150_within_its_budget(dqn_run):
    evaluations = dqn_run.metrics["reward-testing"]
    assert evaluations, "no evaluation episode was logged"
    assert max(evaluations) >= 150, f"evaluation rewards: {evaluations}"


def test_training_reward_rises_and_the_curve_is_drawn(dqn_run):
    rewards = dqn_run.metrics["reward-training"]
    assert len(rewards) >= 50
    first, last = np.mean(rewards[:20]), np.mean(rewards[-20:])
    assert last > 2 * first, f"mean training reward {first:.1f} at the start, {last:.1f} at the end"
    png = dqn_run.reward_curve
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_archive_holds_onnx_and_mxnet_exports(dqn_run):
    names = set(_members(dqn_run.model_data))
    assert {"model.onnx", "model-symbol.json", "model-0000.params", "model-signature.json"} <= names


def test_output_archive_holds_the_final_checkpoint(dqn_run):
    names = _members(dqn_run.output_data)
    checkpoints = [n for n in names if n.startswith("data/checkpoint/") and n.endswith(".main.online")]
    assert checkpoints, f"no checkpoint in output.tar.gz: {sorted(names)}"
    assert "data/checkpoint/.coach_checkpoint" in names
    # The last checkpoint is the end of training, not the last periodic save.
    steps = max(int(n.split("_Step-")[1].split(".")[0]) for n in checkpoints)
    assert steps >= 10_000


def test_coach_experiment_files_land_in_the_intermediate_output(dqn_run):
    intermediate = dqn_run.output_dir / "output" / "intermediate"
    assert list(intermediate.glob("*.csv")), f"no Coach CSV under {intermediate}"


def test_onnx_export_gives_coachs_own_q_values_outside_the_container(dqn_run, tmp_path):
    import onnxruntime

    model_dir = _extract(dqn_run.model_data, tmp_path)
    reference = json.loads((model_dir / "reference-predictions.json").read_text())
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    observations = np.asarray(reference["inputs"]["observation"], dtype=np.float32)
    q_values = np.stack([session.run(None, {input_name: obs[None]})[0][0] for obs in observations])
    np.testing.assert_allclose(q_values, np.asarray(reference["outputs"][0]), rtol=1e-4, atol=1e-4)


# -- other presets and user code ---------------------------------------------------------

def test_clipped_ppo_preset_trains(docker_engine, training_image_ready, tmp_path):
    result = train("preset-cartpole-clippedppo", steps=8000, output_dir=tmp_path, build=False, log=lambda line: None)
    rewards = result.metrics["reward-training"]
    assert np.mean(rewards[-20:]) > np.mean(rewards[:20])
    assert "model.onnx" in _members(result.model_data)


def test_jobs_run_the_fast_path_unless_the_container_environment_asks_for_stock_coach(
        dqn_run, docker_engine, training_image_ready, tmp_path):
    assert "Coach fast path: on" in dqn_run.log_file.read_text()
    stock = train(steps=200, environment={"SMRL_COACH_FAST": "0"}, output_dir=tmp_path, build=False,
                  log=lambda line: None)
    assert "Coach fast path: off (SMRL_COACH_FAST=0): stock Coach" in stock.log_file.read_text()


def test_aws_variables_for_the_container_are_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY refused"):
        train(environment={"AWS_SECRET_ACCESS_KEY": "x"}, output_dir=tmp_path, build=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("api", ["gym", "gymnasium"])
def test_user_environments_of_both_gym_apis_train_in_a_preset(docker_engine, training_image_ready, tmp_path, api):
    result = train(f"preset-corridor-{api}", source_dir=FIXTURES / "envs", entry_point="train.py",
                   output_dir=tmp_path, build=False, log=lambda line: None)
    assert len(result.metrics["reward-training"]) >= 5


def _public_sdk_job(tmp_path: Path, entry_point: str, source_dir: Path, **hyperparameters):
    """What a user writes: only the public SDK API, the emulator's session, no image_uri."""
    from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

    from emulator import local_session

    return RLEstimator(
        entry_point=entry_point,
        source_dir=str(source_dir),
        toolkit=RLToolkit.COACH,
        toolkit_version="0.11.0",
        framework=RLFramework.MXNET,
        role="any-string",
        instance_type="local",
        instance_count=1,
        output_path=(tmp_path / "out").as_uri(),
        hyperparameters=hyperparameters,
        sagemaker_session=local_session(work_dir=tmp_path / "work"),
    )


def test_your_own_env_and_preset_train_from_the_cli_with_the_images_launcher(docker_engine, training_image_ready,
                                                                           tmp_path):
    """The README's "Your own environment": a preset file's path is enough; its folder (the
    env module beside it) is the job's code, and the image's launcher runs it."""
    preset = REPO / "presets" / "your_env" / "preset-corridor.py"
    done = subprocess.run([str(REPO / ".venv/bin/smrl-local"), "train", "--preset", str(preset), "--steps", "600",
                           "--output", str(tmp_path), "--no-build"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    [job] = [p for p in tmp_path.iterdir() if p.name.startswith("smrl-corridor-")]
    with tarfile.open(job / "model.tar.gz") as tar:
        assert "model.onnx" in {m.name.removeprefix("./") for m in tar.getmembers()}
    assert "Total reward" in (job / "train.log").read_text()
    assert not list((tmp_path / ".smrl" / "sources").glob("*")), "the staged copy of the code is removed"


def test_the_readme_shows_the_your_env_files_as_they_are():
    readme = (REPO / "README.md").read_text()
    for name in ("corridor.py", "preset-corridor.py"):
        assert (REPO / "presets" / "your_env" / name).read_text() in readme, name


def test_a_notebook_style_entry_point_trains_through_the_public_sdk(docker_engine, training_image_ready, tmp_path, capfd):
    before = _container_count(docker_engine)
    estimator = _public_sdk_job(tmp_path, "train_notebook_style.py", FIXTURES / "notebook_style",
                                RLCOACH_PRESET="preset-tiny-dqn", save_model=1,
                                **{"rl.agent_params.algorithm.discont": 0.9})
    estimator.fit()
    output = capfd.readouterr().out
    assert "versions: gym 0.12.5 mxnet 1.9.1 onnx 1.15.0" in output
    assert ("smrl-training warning: hyperparameter rl.agent_params.algorithm.discont changes nothing in preset "
            "preset-tiny-dqn") in output, "a misspelled override its launcher ignores is named in the log"
    assert "Training>" in output
    model = Path(estimator.model_data.removeprefix("file://"))
    assert "model.onnx" in _members(model)
    assert _container_count(docker_engine) == before


def test_training_sends_nothing_off_this_machine_and_no_host_credentials(
    docker_engine, training_image_ready, tmp_path, monkeypatch
):
    """Host side: every socket the process opens goes to loopback (or the Docker socket).
    Container side: the job runs only on an internal network (no NAT, no route out)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAHOSTREALKEY00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-real-secret")
    connections: list[tuple] = []

    def audit(event: str, args: tuple) -> None:
        if event == "socket.connect" and isinstance(args[1], tuple):
            connections.append(args[1])

    sys.addaudithook(audit)  # audit hooks cannot be removed; this one only records
    seen_networks: list[tuple[bool, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for network in docker_engine.networks.list(names=["sagemaker-local"]):
                network.reload()
                seen_networks.append((network.attrs["Internal"], len(network.attrs.get("Containers") or {})))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        estimator = _public_sdk_job(tmp_path, "probe.py", FIXTURES / "probe")
        estimator.fit()
    finally:
        done.set()
        watcher.join()

    off_machine = [a for a in connections if not str(a[0]).startswith(("127.", "::1", "localhost"))]
    assert off_machine == []
    with_job = [internal for internal, attached in seen_networks if attached]
    assert with_job, "never saw the job's container on the sagemaker-local network"
    assert all(with_job), "the job ran on a network that is not internal"
    model = _extract(Path(estimator.model_data.removeprefix("file://")), tmp_path / "model")
    report = json.loads((model / "probe.json").read_text())
    assert report["aws_access_key_id"] not in (None, "AKIAHOSTREALKEY00000")


# -- bad input: a clear error, nothing left behind ----------------------------------------

@pytest.mark.parametrize(
    ("preset", "hyperparameters", "expected"),
    [
        ("preset-raises", {}, ["raised ValueError: this preset is broken on purpose", "Fix the preset file"]),
        ("preset-corridor-gym", {"rl.agent_params.algorithm.discont": 0.9},
         ["has no field 'discont'", "Did you mean 'discount'?"]),
        ("preset-corridor-wrong-shape", {},
         ["EnvironmentCheckError: WrongShapeCorridor (corridor_wrong_shape): step() returned an observation of "
          "shape (3,), but observation_space has shape (2,)"]),
        ("preset-corridor-missing-module", {},
         ["level 'corridor_gone:Corridor': no module 'corridor_gone' in /opt/ml/code", "corridor_gym"]),
    ],
    ids=["preset-raises", "unknown-field", "env-wrong-shape", "level-module-missing"],
)
def test_bad_job_configuration_fails_with_cause_and_fix(
    docker_engine, training_image_ready, tmp_path, preset, hyperparameters, expected
):
    """The launcher in the image turns a user error into the job's failure reason. Every
    other bad `rl.*` name or value is a unit test of its message (tests/test_overrides.py)."""
    before = _container_count(docker_engine)
    with pytest.raises(TrainingError) as failure:
        train(preset, hyperparameters=hyperparameters, source_dir=FIXTURES / "envs", entry_point="train.py",
              output_dir=tmp_path, build=False, log=lambda line: None)
    for text in expected:
        assert text in str(failure.value)
    assert "train.log" in str(failure.value)
    assert _container_count(docker_engine) == before


def test_an_unknown_preset_is_refused_on_the_host_before_any_build_or_container(tmp_path):
    from emulator.inputs import InputError

    with pytest.raises(InputError) as refused:
        train("preset-does-not-exist", source_dir=FIXTURES / "envs", entry_point="train.py", output_dir=tmp_path,
              log=lambda line: None)
    for text in ["Preset 'preset-does-not-exist' not found", "Presets there:", "preset-corridor-gym"]:
        assert text in str(refused.value)
    assert list(tmp_path.iterdir()) == []


def test_steps_that_train_nothing_are_refused_before_an_untrained_model_becomes_latest(tmp_path):
    from emulator.inputs import InputError

    with pytest.raises(InputError, match="steps -5 is not a training budget"):
        train(steps=-5, output_dir=tmp_path, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_local_gpu_without_a_gpu_runtime_is_refused_before_any_container_starts(docker_engine, tmp_path):
    from emulator.engine import has_nvidia_runtime
    from emulator.jobs import JobSetupError

    if has_nvidia_runtime(docker_engine):
        pytest.skip("this engine has an NVIDIA runtime")
    since = int(time.time())
    before = _container_count(docker_engine)
    with pytest.raises(JobSetupError, match="nvidia-container-toolkit"):
        train(instance_type="local_gpu", output_dir=tmp_path, build=False, log=lambda line: None)
    assert _container_count(docker_engine) == before
    assert list(tmp_path.iterdir()) == [], "a refused job leaves no output folder"
    created = docker_engine.events(since=since, until=int(time.time()) + 1, decode=True,
                                   filters={"type": "container", "event": "create",
                                            "label": "com.docker.compose.project"})
    assert list(created) == []


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(REPO / ".venv" / "bin" / "smrl-local"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_train_with_no_docker_engine_says_how_to_start_one(tmp_path):
    import os

    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    done = _cli("train", "--output", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "Docker engine not answering" in done.stderr
    assert "make engine" in done.stderr


def test_train_with_no_compose_on_path_says_how_to_install_it(tmp_path):
    import os
    import shutil

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").symlink_to(shutil.which("docker"))  # docker, but no compose
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}"}
    done = _cli("train", "--no-build", "--output", str(tmp_path), env=env)
    assert done.returncode == 1
    assert "compose" in done.stderr.lower()
    assert "docker-compose" in done.stderr
