"""local_session(): SageMaker local mode that stays on this machine.

Unit tests need no Docker. Integration tests run real jobs through the SDK with a tiny
image and check isolation and cleanup.
"""

from __future__ import annotations

import io
import ipaddress
import os
import shutil
import signal
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from emulator import local_session
from emulator.session import PLACEHOLDER_ACCESS_KEY, PLACEHOLDER_SECRET_KEY, AWSCallRefused, job_log_path, kept_log

REAL_KEY = "AKIAREALHOSTKEY00000"
REAL_SECRET = "real-host-secret-that-must-not-leak"
ROLE = "arn:aws:iam::000000000000:role/local"

# --- network audit ------------------------------------------------------------------

_connections: list[tuple[str, object]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _connections is not None and event in ("socket.connect", "socket.getaddrinfo"):
        _connections.append((event, args[1] if event == "socket.connect" else args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records only inside the fixture


def _off_machine(event: str, target: object) -> bool:
    if event == "socket.getaddrinfo":
        return target not in ("localhost", None) and not str(target).startswith("127.")
    if not isinstance(target, tuple):  # AF_UNIX: the Docker socket
        return False
    return not ipaddress.ip_address(target[0]).is_loopback


@pytest.fixture
def network_audit():
    """Connection attempts and DNS lookups made while the test runs."""
    global _connections
    _connections = []
    try:
        yield _connections
    finally:
        _connections = None


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def real_host_credentials(tmp_path, monkeypatch):
    """Credentials a developer's machine might hold, in env and in a shared file."""
    credentials = tmp_path / "aws-credentials"
    credentials.write_text(
        f"[dev]\naws_access_key_id = {REAL_KEY}\naws_secret_access_key = {REAL_SECRET}\n"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", REAL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", REAL_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "real-session-token")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "dev")


@pytest.fixture
def clean_region_env(monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)


@pytest.fixture
def session(tmp_path, clean_region_env):
    return local_session(work_dir=tmp_path / "work")


# --- unit tests ---------------------------------------------------------------------


def test_containers_get_placeholder_credentials_never_the_hosts(
    real_host_credentials, tmp_path, monkeypatch, clean_region_env
):
    from sagemaker.local.image import _SageMakerContainer

    from emulator.containers import TrainingContainer

    monkeypatch.setattr(
        _SageMakerContainer, "_get_compose_cmd_prefix", staticmethod(lambda: ["docker-compose"])
    )
    container = TrainingContainer(
        "local", 2, "image:tag", sagemaker_session=local_session(work_dir=tmp_path)
    )
    container.container_root = str(tmp_path)

    compose = container._generate_compose_file(
        "train", additional_env_vars={"TRAINING_JOB_NAME": "j"}
    )

    written = (tmp_path / "docker-compose.yaml").read_text()
    for service in compose["services"].values():
        env = dict(item.split("=", 1) for item in service["environment"])
        assert env["AWS_ACCESS_KEY_ID"] == PLACEHOLDER_ACCESS_KEY
        assert env["AWS_SECRET_ACCESS_KEY"] == PLACEHOLDER_SECRET_KEY
        assert "AWS_SESSION_TOKEN" not in env
    for secret in (REAL_KEY, REAL_SECRET, "real-session-token"):
        assert secret not in written


def test_compose_file_uses_the_pre_created_network_and_never_creates_one(
    tmp_path, monkeypatch, session
):
    from sagemaker.local.image import _SageMakerContainer

    from emulator.containers import TrainingContainer

    monkeypatch.setattr(
        _SageMakerContainer, "_get_compose_cmd_prefix", staticmethod(lambda: ["docker-compose"])
    )
    container = TrainingContainer("local", 1, "image:tag", sagemaker_session=session)
    container.container_root = str(tmp_path)

    container._generate_compose_file("train")

    written = yaml.safe_load((tmp_path / "docker-compose.yaml").read_text())
    assert written["networks"] == {"sagemaker-local": {"name": "sagemaker-local", "external": True}}


def test_region_comes_from_argument_then_environment_then_default(
    tmp_path, monkeypatch, clean_region_env
):
    assert local_session(work_dir=tmp_path).boto_region_name == "us-west-2"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert local_session(work_dir=tmp_path).boto_region_name == "eu-west-1"
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    assert local_session(work_dir=tmp_path).boto_region_name == "eu-central-1"
    assert local_session("ap-southeast-2", work_dir=tmp_path).boto_region_name == "ap-southeast-2"


def test_local_code_and_container_root_are_configured(session, tmp_path):
    root = tmp_path / "work" / "containers"

    assert session.config == {"local": {"local_code": True, "container_root": str(root)}}
    assert root.is_dir()
    assert session.local_mode


def test_work_dir_defaults_to_env_then_dot_smrl(tmp_path, monkeypatch, clean_region_env):
    monkeypatch.chdir(tmp_path)
    assert local_session().work_dir == tmp_path / ".smrl"
    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path / "elsewhere"))
    assert local_session().work_dir == tmp_path / "elsewhere"


def test_telemetry_is_opted_out(session):
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.utils import resolve_value_from_config

    assert (
        resolve_value_from_config(config_path=TELEMETRY_OPT_OUT_PATH, sagemaker_session=session)
        is True
    )


def test_default_bucket_is_answered_locally(session, network_audit):
    assert session.default_bucket() == "sagemaker-rl-local"
    assert network_audit == []


def test_a_role_name_is_expanded_locally_not_by_iam(session, network_audit):
    assert session.expand_role("any-string") == "arn:aws:iam::000000000000:role/any-string"
    assert session.expand_role(ROLE) == ROLE
    assert network_audit == []


def test_aws_api_calls_are_refused_before_leaving_the_process(session, network_audit):
    with pytest.raises(AWSCallRefused, match="never calls AWS.*sts"):
        session.boto_session.client("sts").get_caller_identity()
    with pytest.raises(AWSCallRefused, match="file:// URIs"):
        session.upload_data(__file__, bucket="some-bucket")
    assert [c for c in network_audit if _off_machine(*c)] == []


def test_an_aws_profile_that_does_not_exist_does_not_break_local_jobs(tmp_path, monkeypatch, network_audit):
    import boto3
    from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

    boto3.setup_default_session()  # as if the user's code had used boto3 before
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    (tmp_path / "train.py").write_text("")
    session = local_session(work_dir=tmp_path / "work")
    RLEstimator(entry_point="train.py", source_dir=str(tmp_path), toolkit=RLToolkit.COACH,
                toolkit_version="0.11.0", framework=RLFramework.MXNET, role=ROLE,
                instance_type="local", instance_count=1, sagemaker_session=session)
    assert [c for c in network_audit if _off_machine(*c)] == []


def test_session_and_rl_estimator_make_no_connection_off_this_machine(
    real_host_credentials, tmp_path, network_audit, clean_region_env
):
    from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

    (tmp_path / "train.py").write_text("")
    session = local_session(work_dir=tmp_path / "work")
    estimator = RLEstimator(
        entry_point="train.py",
        source_dir=str(tmp_path),
        toolkit=RLToolkit.COACH,
        toolkit_version="0.11.0",
        framework=RLFramework.MXNET,
        role=ROLE,
        instance_type="local",
        instance_count=1,
        sagemaker_session=session,
    )
    estimator._prepare_for_training()

    assert estimator.training_image_uri() == (
        "520713654638.dkr.ecr.us-west-2.amazonaws.com/sagemaker-rl-mxnet:coach0.11.0-cpu-py3"
    )
    assert [c for c in network_audit if _off_machine(*c)] == []


# --- integration: real jobs through the SDK -------------------------------------------

TINY_TRAIN = """#!/bin/sh
hp=/opt/ml/input/config/hyperparameters.json
grep -q sleep $hp && sleep 60
grep -q fail $hp && exit 3
echo "Training> t , Name=main_level/agent, Episode=1, Total reward=5.0, Steps=5,"
echo trained > /opt/ml/model/x
cat /proc/net/route > /opt/ml/model/route
exit 0
"""
TINY_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/smrl-test-tiny:1"


@pytest.fixture(scope="session")
def tiny_image(docker_engine):
    """The project's base image plus a shell-script `train`, tagged like an ECR URI.

    Starts as fast as any container; needs only the base that `make images` resolves.
    """
    from emulator.images import resolve_base_image

    base = resolve_base_image(docker_engine, log=lambda line: None)
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, text, mode in (
            ("Dockerfile", f"FROM {base}\nCOPY train /usr/local/bin/train\n", 0o644),
            ("train", TINY_TRAIN, 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), mode
            tar.addfile(info, io.BytesIO(text.encode()))
    context.seek(0)
    docker_engine.images.build(fileobj=context, custom_context=True, tag=TINY_IMAGE, rm=True, forcerm=True)
    yield TINY_IMAGE
    docker_engine.images.remove(TINY_IMAGE, force=True)


def _footprint(client) -> tuple[int, int]:
    """What a job could leave behind: SDK-launched containers and the job network. (Not all
    containers: other work may share the engine.)"""
    job_containers = client.containers.list(
        all=True, filters={"label": "com.docker.compose.service"}
    )
    return len(job_containers), len(client.networks.list(names=["sagemaker-local"]))


def _estimator(session, image, hyperparameters=None, instance_count=1, instance_type="local"):
    from sagemaker.estimator import Estimator

    return Estimator(
        image_uri=image,
        role=ROLE,
        instance_count=instance_count,
        instance_type=instance_type,
        hyperparameters=hyperparameters or {},
        sagemaker_session=session,
    )


@pytest.mark.integration
@pytest.mark.parametrize("instance_count", [1, 2])
def test_fit_runs_on_an_internal_network_and_leaves_nothing_behind(
    docker_engine, tiny_image, session, instance_count
):
    before = _footprint(docker_engine)
    since = time.time()

    estimator = _estimator(session, tiny_image, instance_count=instance_count)
    estimator.fit(job_name=f"tiny-{instance_count}-{int(time.time())}")

    model = Path(estimator.model_data.replace("file://", ""))
    assert model.parent == session.work_dir / "output" / estimator.latest_training_job.name
    with tarfile.open(model) as tar:
        assert tar.extractfile("x").read() == b"trained\n"
    assert _footprint(docker_engine) == before
    assert list((session.work_dir / "containers").iterdir()) == []
    events = list(
        docker_engine.events(
            since=since,
            until=time.time(),
            filters={"type": "network", "network": "sagemaker-local"},
            decode=True,
        )
    )
    created = {e["Actor"]["ID"] for e in events if e["Action"] == "create"}
    connected = [e["Actor"]["ID"] for e in events if e["Action"] == "connect"]
    assert len(created) == 1 and len(connected) == instance_count
    assert set(connected) == created  # every job container joined the network the guard made


@pytest.mark.integration
def test_guard_creates_the_network_internal(docker_engine):
    from emulator.containers import TRAINING_NETWORK, ensure_network, release_network

    ensure_network(docker_engine, TRAINING_NETWORK, internal=True)
    try:
        assert docker_engine.networks.get("sagemaker-local").attrs["Internal"] is True
    finally:
        release_network(docker_engine, TRAINING_NETWORK)
    assert docker_engine.networks.list(names=["sagemaker-local"]) == []


@pytest.mark.integration
def test_failed_job_raises_and_leaves_nothing_behind(docker_engine, tiny_image, session):
    before = _footprint(docker_engine)

    with pytest.raises(RuntimeError, match="exited with code: 3"):
        _estimator(session, tiny_image, {"fail": "yes"}).fit()

    assert _footprint(docker_engine) == before
    assert list((session.work_dir / "containers").iterdir()) == []


@pytest.mark.integration
def test_interrupted_job_leaves_nothing_behind(docker_engine, tiny_image, session):
    before = _footprint(docker_engine)

    def interrupt_once_training():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if docker_engine.containers.list(filters={"ancestor": tiny_image}):
                os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would
                return
            time.sleep(0.1)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    client = session.sagemaker_client
    with pytest.raises(KeyboardInterrupt):
        # The client, not Estimator.fit: the SDK's telemetry wrapper around fit() returns
        # from a `finally`, which swallows KeyboardInterrupt.
        client.create_training_job(
            TrainingJobName=f"interrupted-{int(time.time())}",
            AlgorithmSpecification={"TrainingImage": tiny_image, "TrainingInputMode": "File"},
            OutputDataConfig={"S3OutputPath": ""},
            ResourceConfig={"InstanceType": "local", "InstanceCount": 1},
            HyperParameters={"sleep": "yes"},
        )

    assert _footprint(docker_engine) == before
    assert list((session.work_dir / "containers").iterdir()) == []


@pytest.mark.integration
def test_missing_image_fails_before_any_container_without_pulling(
    docker_engine, session, network_audit
):
    from emulator.containers import ContainerSetupError

    before = _footprint(docker_engine)
    image = "520713654638.dkr.ecr.eu-north-1.amazonaws.com/sagemaker-rl-mxnet:coach0.11.0-cpu-py3"

    with pytest.raises(ContainerSetupError, match="never pulls.*`smrl-local build"):
        _estimator(session, image).fit()

    assert _footprint(docker_engine) == before
    assert [c for c in network_audit if _off_machine(*c)] == []


@pytest.mark.integration
def test_local_gpu_without_nvidia_support_fails_before_any_container(
    docker_engine, tiny_image, session
):
    from emulator.engine import has_nvidia_runtime
    from emulator.jobs import JobSetupError

    if has_nvidia_runtime(docker_engine):
        pytest.skip("this engine has GPU support")
    before = _footprint(docker_engine)

    with pytest.raises(JobSetupError, match='nvidia-container-toolkit.*instance_type="local"'):
        _estimator(session, tiny_image, instance_type="local_gpu").fit()

    assert _footprint(docker_engine) == before


@pytest.mark.integration
def test_a_non_internal_network_is_replaced_unless_in_use(docker_engine, tiny_image):
    from emulator.containers import TRAINING_NETWORK, ContainerSetupError, ensure_network, release_network

    docker_engine.networks.create("sagemaker-local")
    user = docker_engine.containers.run(
        tiny_image, ["sleep", "60"], network="sagemaker-local", detach=True
    )
    try:
        with pytest.raises(ContainerSetupError, match="exists with internal=False and is used by"):
            ensure_network(docker_engine, TRAINING_NETWORK, internal=True)
    finally:
        user.remove(force=True)

    ensure_network(docker_engine, TRAINING_NETWORK, internal=True)

    assert docker_engine.networks.get("sagemaker-local").attrs["Internal"] is True
    release_network(docker_engine, TRAINING_NETWORK)


@pytest.mark.integration
def test_local_training_images_get_the_uri_the_sdk_computes(docker_engine, tiny_image):
    from emulator.images import ensure_sdk_tags, training_image

    local_tag = training_image("cpu")
    uri = "520713654638.dkr.ecr.ap-southeast-2.amazonaws.com/sagemaker-rl-mxnet:coach0.11.0-cpu-py3"
    borrowed = not docker_engine.images.list(name=local_tag)
    if borrowed:  # stand in for the real image without touching one that exists
        docker_engine.images.get(tiny_image).tag(local_tag)
    tags_before = {tag for image in docker_engine.images.list() for tag in image.tags}
    try:
        assert uri in ensure_sdk_tags("ap-southeast-2", docker_engine)
        assert docker_engine.images.get(uri).id == docker_engine.images.get(local_tag).id
        assert uri in ensure_sdk_tags("ap-southeast-2", docker_engine)  # idempotent
    finally:
        # Every ap-southeast-2 URI this test made (the inference image gets one too).
        for tag in {tag for image in docker_engine.images.list() for tag in image.tags} - tags_before:
            if ".ap-southeast-2." in tag:
                docker_engine.images.remove(tag)
        if borrowed:
            docker_engine.images.remove(local_tag)


@pytest.mark.integration
def test_folders_with_files_the_host_user_cannot_delete_are_emptied_from_a_container(
    docker_engine, tiny_image, tmp_path, monkeypatch
):
    from emulator import containers

    folder = tmp_path / "job"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "written-as-root").write_text("x")
    real_rmtree = shutil.rmtree
    calls = []

    def rmtree_denied_once(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise PermissionError(13, "Permission denied", str(path))
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(containers.shutil, "rmtree", rmtree_denied_once)

    containers.remove_tree(folder, docker_engine, tiny_image)

    assert not folder.exists()
    assert len(calls) == 2
    assert docker_engine.containers.list(all=True, filters={"ancestor": tiny_image}) == []


@pytest.mark.integration
def test_jobs_sharing_a_file_output_path_keep_each_ones_archives(docker_engine, tiny_image, session, tmp_path):
    from emulator.kept_artifacts import JobNameReusedError

    output = tmp_path / "shared"
    estimators = []
    for index in (1, 2):
        estimator = _estimator(session, tiny_image)
        estimator.output_path = output.as_uri()
        estimator.fit(job_name=f"shared-{index}-{int(time.time())}")
        estimators.append(estimator)
    first, second = (Path(e.model_data.removeprefix("file://")) for e in estimators)

    for estimator, model in zip(estimators, (first, second)):
        assert model == output / estimator.latest_training_job.name / "output" / "model.tar.gz"
        with tarfile.open(model) as tar:
            assert tar.extractfile("x").read() == b"trained\n"
        assert (model.parent / "output.tar.gz").is_file()
    assert not os.path.samefile(first, second)
    assert os.path.samefile(output / "model.tar.gz", second), "the SDK's place holds the newest job's model"

    before = _footprint(docker_engine)
    with pytest.raises(JobNameReusedError, match="already wrote its archives"):
        estimators[0].fit(job_name=estimators[0].latest_training_job.name)
    assert _footprint(docker_engine) == before
    assert os.path.samefile(output / "model.tar.gz", second)


def test_a_jobs_streamed_output_is_kept_in_its_log_as_well(tmp_path, capsys):
    log = job_log_path(tmp_path, "job-1")
    with kept_log(log):
        print("Training> Episode=1, Total reward=9.0,")
    assert "Training> Episode=1" in capsys.readouterr().out
    assert log.read_text() == "Training> Episode=1, Total reward=9.0,\n"
    assert log == tmp_path / "logs" / "job-1.log"


@pytest.mark.integration
def test_jobs_starting_together_end_up_with_one_network_of_the_name(docker_engine):
    import docker

    from emulator.containers import ensure_network

    name = f"smrl-test-race-{os.getpid()}"
    clients = [docker.from_env() for _ in range(4)]
    start = threading.Barrier(len(clients))

    def create(client) -> None:
        start.wait()
        ensure_network(client, name, internal=True)

    threads = [threading.Thread(target=create, args=(client,)) for client in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len([n for n in docker_engine.networks.list(names=[name]) if n.name == name]) == 1
    finally:
        for network in docker_engine.networks.list(names=[name]):
            network.remove()
        for client in clients:
            client.close()
