"""A SageMaker SDK 2.x local-mode session that never reaches AWS.

``local_session()`` returns a ``LocalSession`` for unchanged estimator code
(``RLEstimator(..., instance_type="local", sagemaker_session=local_session())``) that:

* holds placeholder credentials, so the host's real AWS keys never reach a container
  (the SDK copies the session credentials into every container's environment);
* refuses every AWS API call before it leaves the process, naming the operation;
* answers ``default_bucket()`` locally and opts out of SDK telemetry;
* runs each training job with the guard rails of ``emulator.jobs``: engine, GPU and
  image checks first, an internal network during, no containers or temp folders after;
* honours ``checkpoint_s3_uri`` / ``checkpoint_local_path`` and accepts
  ``use_spot_instances`` / ``max_wait``, which the SDK refuses in local mode
  (``emulator.checkpoint_sync``); and runs the spot-interruption drill when asked
  (``emulator.interruptions``).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlparse

import boto3
import botocore.session
import sagemaker.utils
from sagemaker.estimator import DIR_PARAM_NAME, SCRIPT_PARAM_NAME, Framework, _TrainingJob
from sagemaker.local import LocalSession
from sagemaker.local.entities import _LocalTrainingJob
from sagemaker.local.local_session import LocalSagemakerClient
from sagemaker.utils import format_tags

from emulator import contract, resources
from emulator.checkpoint_sync import CheckpointSync, job_folder, remember_target
from emulator.cloud_layout import IntermediateUploads, upload_as_the_cloud_does
from emulator.containers import TrainingContainer, remove_containers
from emulator.engine import require_engine
from emulator.errors import UserError
from emulator.images import IMAGES, default_region, variant_for
from emulator.interruptions import Interrupter, Interruption, plan_from_environment
from emulator.job_failure import TrainingJobFailed, describe
from emulator.jobcode import copy_job_code, requirements_wheelhouse
from emulator.jobs import JobGuard, raise_if_a_host_failed
from emulator.kept_artifacts import KeptArtifacts, shared_output_folder
from emulator.local_aws import AWSCallRefused
from emulator.serving import LoopbackEndpoint, LoopbackRuntimeClient

LOCAL_BUCKET = "sagemaker-rl-local"
# Set on an estimator whose ml.* instance type `smrl-local run` mapped to a local one.
CLOUD_INSTANCE_TYPE_ATTRIBUTE = "_smrl_cloud_instance_type"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
PLACEHOLDER_ACCESS_KEY = contract.PLACEHOLDER_ACCESS_KEY
PLACEHOLDER_SECRET_KEY = contract.PLACEHOLDER_SECRET_KEY

# Passed as the session's SDK defaults, so that the host's admin/user config files (which
# may point at S3) are not read, and telemetry (an STS call plus an S3 GET per job) is off.
SDK_DEFAULTS = {
    "SchemaVersion": "1.0",
    "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}},
}


def _validate_config_once(validate: Callable[[dict], None]) -> Callable[[dict], None]:
    """SDK 2.x re-validates the session's whole config against its JSON schema on every
    config lookup (about 0.15 s each, some 20 per fit(): 3 s of a no-op job). A config
    that passed once passes again, so each distinct config is validated once."""
    passed: set[str] = set()

    def validate_once(config: dict) -> None:
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in passed:
            validate(config)
            passed.add(key)

    validate_once.smrl_memoized = True  # type: ignore[attr-defined]
    return validate_once


# Patch of the SDK (sagemaker.utils.validate_sagemaker_config, used by every config
# lookup): same validation, done once per distinct config. See _validate_config_once.
if not getattr(sagemaker.utils.validate_sagemaker_config, "smrl_memoized", False):
    sagemaker.utils.validate_sagemaker_config = _validate_config_once(  # type: ignore[assignment]
        sagemaker.utils.validate_sagemaker_config)


def _record_code_to_stage(prepare: Callable) -> Callable:
    """In local-code mode the SDK mounts ``source_dir`` as it is and drops ``dependencies``;
    in the cloud it packs both into the job's code. For estimators of a ``LocalRLSession``
    this remembers, per job, what the cloud would pack, for ``stage_code`` to copy."""

    def prepare_for_training(self, job_name=None):
        source_dir_given = self.source_dir is not None
        prepare(self, job_name=job_name)
        session = self.sagemaker_session
        if isinstance(session, LocalRLSession) and self._current_job_name:
            session.code_to_stage[self._current_job_name] = CodeToStage(
                dependencies=list(self.dependencies or []), whole_source_dir=source_dir_given,
                cloud_instance_type=getattr(self, CLOUD_INSTANCE_TYPE_ATTRIBUTE, None),
            )

    prepare_for_training.smrl_records_code = True  # type: ignore[attr-defined]
    return prepare_for_training


# Patch of the SDK (Framework._prepare_for_training, run by every framework estimator's
# fit()): the same preparation, plus a note of the job's dependencies. See _record_code_to_stage.
if not getattr(Framework._prepare_for_training, "smrl_records_code", False):
    Framework._prepare_for_training = _record_code_to_stage(  # type: ignore[method-assign]
        Framework._prepare_for_training)


def _checkpoints_in_local_mode(add_args: Callable) -> Callable:
    """The SDK's spot and checkpoint arguments, for jobs of a ``LocalRLSession`` also in local
    mode: CheckpointConfig then reaches ``_GuardedLocalClient.create_training_job``."""

    def add_spot_checkpoint_args(cls, local_mode, estimator, train_args):
        ours = isinstance(estimator.sagemaker_session, LocalRLSession)
        add_args(local_mode and not ours, estimator, train_args)

    add_spot_checkpoint_args.smrl_checkpoints = True  # type: ignore[attr-defined]
    return add_spot_checkpoint_args


# Patch of the SDK (_TrainingJob._add_spot_checkpoint_args, run by every fit()): local mode
# refuses use_spot_instances, checkpoint_s3_uri and checkpoint_local_path before any container
# starts (the open SDK request aws/sagemaker-python-sdk#3099). For our sessions they pass, as
# in the cloud; other local sessions keep the refusal.
if not getattr(_TrainingJob._add_spot_checkpoint_args, "smrl_checkpoints", False):
    _TrainingJob._add_spot_checkpoint_args = classmethod(  # type: ignore[method-assign,assignment]
        _checkpoints_in_local_mode(_TrainingJob._add_spot_checkpoint_args))


@dataclass(frozen=True)
class CodeToStage:
    """What the cloud packs into a job's code: source_dir's content (or the entry point
    alone, when the estimator had no source_dir) and the dependencies; and how the job was
    asked for."""

    dependencies: list[str]
    whole_source_dir: bool
    # The ml.* type the estimator asked for before it was mapped to a local one: such a
    # job's artifacts go where the cloud puts them (emulator.cloud_layout).
    cloud_instance_type: str | None = None


def stage_code(hyperparameters: dict, plan: CodeToStage | None, target: Path) -> dict:
    """Copies a job's code (see ``copy_job_code``) from the local folder that
    ``sagemaker_submit_directory`` names into ``target``, which the container mounts
    read-only: a job can neither see later edits nor change the user's files.

    Returns:
        The hyperparameters with ``sagemaker_submit_directory`` pointing at ``target``;
        unchanged when the job has no local code.
    """
    if DIR_PARAM_NAME not in hyperparameters:
        return hyperparameters
    submitted = urlparse(json.loads(hyperparameters[DIR_PARAM_NAME]))
    if submitted.scheme != "file":
        return hyperparameters
    plan = plan or CodeToStage(dependencies=[], whole_source_dir=True)
    entry_point = None if plan.whole_source_dir else json.loads(hyperparameters[SCRIPT_PARAM_NAME])
    copy_job_code(Path(os.path.abspath(submitted.netloc + submitted.path)), plan.dependencies, target, entry_point)
    return {**hyperparameters, DIR_PARAM_NAME: json.dumps(target.as_uri())}


def job_log_path(work_dir: str | Path, job_name: str) -> Path:
    """Where the whole log of a session's training job is kept, however fit() was called."""
    return Path(work_dir, "logs", f"{job_name}.log")


class _Tee:
    """A text stream that writes to `stream` and to `copy`."""

    def __init__(self, stream: Any, copy: Any):
        self.stream, self.copy = stream, copy

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.copy.flush()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


@contextlib.contextmanager
def kept_log(path: Path) -> Iterator[None]:
    """Copies what the SDK streams from the job's containers (to ``sys.stdout``) into `path`
    as well: the cloud keeps a job's log in CloudWatch; plain ``fit()`` would only print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as copy:
        stream = sys.stdout
        sys.stdout = _Tee(stream, copy)
        try:
            yield
        finally:
            sys.stdout = stream


def refuse_calls_off_this_machine(request: Any, **_: Any) -> None:
    """botocore's before-send hook: a request to a server on this machine (the local S3)
    goes out; any other is refused before it is sent."""
    if (urlparse(request.url).hostname or "") in LOOPBACK_HOSTS:
        return
    raise AWSCallRefused(
        f"sagemaker-rl-local never calls AWS, and refused {request.method} {request.url}. "
        "Use file:// URIs for inputs and output_path, and local images "
        '(instance_type="local" or "local_gpu").'
    )


def _offline_boto_session(region: str) -> boto3.Session:
    """A boto3 session with placeholder keys that reads no AWS config or credentials files
    and refuses every request before it is sent."""
    # Without a profile or files from the environment, AWS_PROFILE and ~/.aws cannot
    # change (or break) this session.
    core = botocore.session.Session(
        session_vars={
            "profile": (None, None, None, None),
            "config_file": (None, None, os.devnull, None),
            "credentials_file": (None, None, os.devnull, None),
        }
    )
    # Registered before any client exists: clients copy the handlers when created.
    core.register("before-send", refuse_calls_off_this_machine)
    return boto3.Session(
        botocore_session=core,
        aws_access_key_id=PLACEHOLDER_ACCESS_KEY,
        aws_secret_access_key=PLACEHOLDER_SECRET_KEY,
        region_name=region,
    )


ATTEMPT_LOG = "smrl-local: attempt"


def run_attempts(start: Callable[[], None], container: TrainingContainer, client: Any, session: LocalRLSession,
                 job_name: str, checkpoints: dict | None) -> list[Interruption]:
    """Runs a job's container until an attempt ends without a planned interruption, as a
    managed spot job is restarted: each attempt in a new container whose checkpoint folder
    (``checkpoints``: the request's CheckpointConfig) is restored from its URI, synced
    while it runs and once more after it stopped. Returns the interruptions."""
    plan = session.interrupt_after
    interruptions: list[Interruption] = []
    attempt = 1
    if checkpoints:
        remember_target(job_folder(session.work_dir, job_name), checkpoints["S3Uri"])
    while True:
        sync: Any = contextlib.nullcontext()
        if checkpoints:
            local_path = checkpoints.get("LocalPath") or str(contract.CHECKPOINT_LOCAL_DIR)
            sync = CheckpointSync(checkpoints["S3Uri"], job_folder(session.work_dir, job_name) / f"attempt-{attempt}",
                                  session.s3_client)
            restored = sync.restore()
            container.checkpoint_volume = (sync.folder, local_path)
            print(f"{ATTEMPT_LOG} {attempt}: {restored.files} checkpoint files ({restored.bytes / 2**20:.2f} MB) "
                  f"restored from {checkpoints['S3Uri']} into {local_path}", flush=True)
        elif plan:
            print(f"{ATTEMPT_LOG} {attempt}: no checkpoint_s3_uri, nothing restored", flush=True)
        planned = plan[attempt - 1] if attempt <= len(plan) else None
        if attempt == 1 and session.interrupt_when_logged:
            planned = planned or 0.0
        interrupter = (Interrupter(client, container.hosts, attempt, planned,
                                   after_log=session.interrupt_when_logged if attempt == 1 else None)
                       if planned is not None else None)
        try:
            with sync, interrupter or contextlib.nullcontext():
                start()
            return interruptions
        except RuntimeError:
            if interrupter is None or not interrupter.fired:
                raise
        interruptions.append(interrupter.record)
        print(f"smrl-local: {interrupter.record.stop()}; restarting the job in a new container"
              f"{'' if checkpoints else ' (it sets no checkpoint_s3_uri: nothing to resume from)'}", flush=True)
        remove_containers(client, container.hosts)
        attempt += 1


def attach_resume_lines(interruptions: list[Interruption], log_file: Path) -> None:
    """Each interruption's record gets the restarted attempt's "Resumed from checkpoint" line."""
    if not interruptions or not log_file.is_file():
        return
    segments = log_file.read_text(errors="replace").split(f"{ATTEMPT_LOG} ")[1:]
    for interruption in interruptions:
        if interruption.attempt < len(segments):
            lines = [line for line in segments[interruption.attempt].splitlines() if contract.RESUMED_LOG in line]
            interruption.resumed = contract.RESUMED_LOG + lines[0].split(contract.RESUMED_LOG, 1)[1] if lines else None


class _GuardedLocalClient(LocalSagemakerClient):
    """Runs local training jobs inside a ``JobGuard``."""

    def create_training_job(
        self,
        TrainingJobName,
        AlgorithmSpecification,
        OutputDataConfig,
        ResourceConfig,
        InputDataConfig=None,
        Environment=None,
        **kwargs,
    ):
        """Same contract as ``LocalSagemakerClient.create_training_job``, plus the guard
        rails of ``emulator.jobs``; without the SDK's telemetry wrapper."""
        session = cast("LocalRLSession", self.sagemaker_session)
        image = AlgorithmSpecification["TrainingImage"]
        instance_type = ResourceConfig["InstanceType"]
        plan = session.code_to_stage.pop(TrainingJobName, None)
        requested_output = OutputDataConfig.get("S3OutputPath") or ""
        cloud_layout = bool(plan and plan.cloud_instance_type and requested_output.startswith("s3://"))
        if not requested_output or cloud_layout:
            # Without an output path the SDK would leave model.tar.gz in the temp folder the
            # guard deletes; a cloud job's artifacts are uploaded from here under the cloud's keys.
            output = Path(session.work_dir, "output", TrainingJobName).resolve()
            OutputDataConfig = {**OutputDataConfig, "S3OutputPath": output.as_uri()}
            session.artifacts_dirs[TrainingJobName] = output
        elif requested_output.startswith("file://"):
            parsed = urlparse(requested_output)
            session.artifacts_dirs[TrainingJobName] = Path(os.path.abspath(parsed.netloc + parsed.path))

        # Jobs sharing a file:// output path: each one's archives kept (emulator.kept_artifacts).
        shared = shared_output_folder(OutputDataConfig.get("S3OutputPath") or "", TrainingJobName)
        kept = KeptArtifacts(shared, TrainingJobName) if shared else None
        client = require_engine()
        try:
            if kept:
                kept.before()
            with JobGuard(client, image, instance_type, session.boto_region_name) as guard:
                container = TrainingContainer(
                    instance_type,
                    ResourceConfig["InstanceCount"],
                    image,
                    sagemaker_session=session,
                )
                guard.container = container
                staged = Path(session.work_dir, "code", TrainingJobName)
                guard.own_folder(staged)
                hyperparameters = stage_code(kwargs.get("HyperParameters", {}), plan, staged)
                requirements = staged / contract.REQUIREMENTS_FILE
                if requirements.is_file():
                    lock = IMAGES["training"].lock_file(variant_for(instance_type))
                    container.wheelhouse = requirements_wheelhouse(
                        requirements, lock, Path(session.work_dir, "requirements-wheelhouse")
                    )
                if AlgorithmSpecification.get("ContainerEntrypoint"):
                    container.container_entrypoint = AlgorithmSpecification["ContainerEntrypoint"]
                if AlgorithmSpecification.get("ContainerArguments"):
                    container.container_arguments = AlgorithmSpecification["ContainerArguments"]
                job = _LocalTrainingJob(container)
                uploads = (IntermediateUploads(session.s3_client, output, requested_output, TrainingJobName)
                           if cloud_layout else contextlib.nullcontext())
                log_file = job_log_path(session.work_dir, TrainingJobName)
                checkpoints = kwargs.get("CheckpointConfig")
                guard.own_folder(job_folder(session.work_dir, TrainingJobName))  # synced to its URI
                try:
                    with uploads, kept_log(log_file):
                        session.interruptions[TrainingJobName] = run_attempts(
                            lambda: job.start(InputDataConfig or [], OutputDataConfig, hyperparameters,
                                              Environment or {}, TrainingJobName),
                            container, client, session, TrainingJobName, checkpoints)
                    raise_if_a_host_failed(client, container.hosts)
                    attach_resume_lines(session.interruptions[TrainingJobName], log_file)
                except RuntimeError as error:
                    if isinstance(error, UserError):
                        raise
                    # The SDK says only "Failed to run: [docker-compose ...] exited with code: 1".
                    artifacts = session.artifacts_dirs.get(TrainingJobName)
                    raise TrainingJobFailed(describe(
                        TrainingJobName, artifacts / contract.OUTPUT_ARCHIVE if artifacts else None,
                        log_file.read_text(errors="replace") if log_file.is_file() else "", log_file, str(error),
                    )) from None
        finally:
            client.close()
            kept_model = kept.after() if kept else None
            if kept_model:  # this job's own archives, whatever later jobs write to the shared path
                session.artifacts_dirs[TrainingJobName] = kept_model.parent
        if kept_model:
            job.model_artifacts = kept_model.as_uri()
        if cloud_layout:
            job.model_artifacts = upload_as_the_cloud_does(
                session.s3_client, output, requested_output, TrainingJobName)
        LocalSagemakerClient._training_jobs[TrainingJobName] = job

    def create_endpoint(self, EndpointName, EndpointConfigName, Tags=None):
        """Same contract as ``LocalSagemakerClient.create_endpoint``; serves through
        ``emulator.serving`` (loopback port, fast readiness, always removed)."""
        endpoint = LoopbackEndpoint(EndpointName, EndpointConfigName, format_tags(Tags), self.sagemaker_session)
        LocalSagemakerClient._endpoints[EndpointName] = endpoint
        endpoint.serve()


class LocalRLSession(LocalSession):
    """``LocalSession`` that stays on this machine; build it with ``local_session()``."""

    def __init__(self, boto_session: boto3.Session, work_dir: Path, s3_endpoint_url: str | None = None,
                 default_bucket: str | None = LOCAL_BUCKET, interrupt_after: list[float] | None = None):
        self.work_dir = work_dir
        self.code_to_stage: dict[str, CodeToStage] = {}
        # The spot-interruption drill: seconds into each attempt at which it is stopped.
        self.interrupt_after = plan_from_environment() if interrupt_after is None else list(interrupt_after)
        # Or once, when the first attempt's log first shows this text (the pre-flight's drill).
        self.interrupt_when_logged: str | None = None
        self.interruptions: dict[str, list[Interruption]] = {}
        # Where each job's model.tar.gz and output.tar.gz are on this machine, by job name.
        self.artifacts_dirs: dict[str, Path] = {}
        super().__init__(
            boto_session=boto_session,
            default_bucket=default_bucket,
            s3_endpoint_url=s3_endpoint_url,
            sagemaker_config=SDK_DEFAULTS,
        )
        self.sagemaker_client = _GuardedLocalClient(self)
        self.sagemaker_runtime_client = LoopbackRuntimeClient()
        containers = work_dir / "containers"
        containers.mkdir(parents=True, exist_ok=True)
        self.config = {"local": {"local_code": True, "container_root": str(containers)}}

    def wait_for_job(self, job: str, poll: int = 5) -> dict:
        """A local job has finished when create_training_job returns (and raised if it
        failed); the SDK's version would sleep `poll` seconds before looking."""
        return self.sagemaker_client.describe_training_job(TrainingJobName=job)

    def wait_for_endpoint(self, endpoint: str, poll: float = 0, live_logging: bool = False) -> dict:
        """The endpoint is ready when create_endpoint returns (it waited for /ping); the
        SDK's version would sleep 30 s first."""
        return self.sagemaker_client.describe_endpoint(EndpointName=endpoint)

    def default_bucket(self) -> str:
        """A fixed name; the SDK's version asks STS and S3."""
        return LOCAL_BUCKET

    def expand_role(self, role: str) -> str:
        """A role name as a placeholder ARN; the SDK's version asks IAM. Local jobs use no role."""
        if "/" in role:
            return role
        return f"arn:aws:iam::{contract.PLACEHOLDER_ACCOUNT}:role/{role}"


def local_session(region: str | None = None, work_dir: str | Path | None = None,
                  interrupt_after: list[float] | None = None) -> LocalRLSession:
    """A SageMaker local-mode session for training on this machine, without AWS.

    Args:
        region: Region the SDK computes image URIs for; defaults to ``AWS_REGION``, then
            ``AWS_DEFAULT_REGION``, then ``us-west-2``. Nothing is sent to it.
        work_dir: Folder for job files: SDK temp folders under ``containers/`` (deleted
            after each job) and model artifacts of jobs without an ``output_path`` under
            ``output/<job name>/``. Defaults to ``$SMRL_WORK_DIR``, else ``./.smrl``.
        interrupt_after: The spot-interruption drill for every job of the session: seconds
            into each attempt at which the job is stopped (SIGTERM, SIGKILL 120 s later)
            and restarted from its checkpoints. Defaults to ``$SMRL_INTERRUPT_AFTER``
            ("30" or "30,45"); none.

    Returns:
        A ``sagemaker.local.LocalSession`` subclass to pass as ``sagemaker_session``.

    Side effect: the process's default boto3 session becomes an offline one too. Every
    SDK estimator creates a client from it (for its TensorBoard app), which would read the
    host's AWS config and fail on, e.g., an ``AWS_PROFILE`` that does not exist; and AWS
    calls made through it are refused like the session's own.
    """
    work_dir = Path(work_dir or resources.work_dir()).resolve()
    boto_session = _offline_boto_session(region or default_region())
    boto3.DEFAULT_SESSION = _offline_boto_session(region or default_region())
    return LocalRLSession(boto_session, work_dir, interrupt_after=interrupt_after)
