"""What `smrl-local run` installs in the process that runs the user's code (a script, or a
notebook's kernel), before the first line of it: code written for the cloud runs here.

* every botocore client answers STS, IAM and SageMaker locally (``emulator.local_aws``),
  sends S3 to the local server, and refuses anything else before it leaves the process;
* ``sagemaker.Session``, ``sagemaker.local.LocalSession`` and every other name the SDK
  binds to those classes build a ``RunSession``: the emulator's offline session, with the
  local S3 server behind ``default_bucket()``, uploads, downloads and ``s3://`` paths;
* ``sagemaker.get_execution_role()`` returns a placeholder role;
* a connection to anything but this machine is refused (an audit hook on
  ``socket.connect``), and written to ``refused-connections.log`` in the work folder;
* estimators and models asked for an ``ml.*`` instance type run locally: ``local``, or
  ``local_gpu`` for GPU types when the engine has an NVIDIA runtime; the mapping is printed once;
* when the run's environment names a journal (``emulator.run_journal``), what the code built,
  trained, deployed and asked is written to it; with ``SMOKE_STEPS_ENV`` too (the pre-flight
  of a notebook), every RLEstimator trains for that many environment steps.

The environment of the run (placeholder credentials, region, ``AWS_ENDPOINT_URL_S3``) is set
by the caller, see ``run_environment``.
"""

from __future__ import annotations

import functools
import inspect
import ipaddress
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import sagemaker
import sagemaker.estimator
import sagemaker.local
import sagemaker.model
import sagemaker.mxnet
import sagemaker.predictor
import sagemaker.rl
import sagemaker.rl.estimator
import sagemaker.session
from sagemaker.local import LocalSession

from emulator import contract, local_aws, resources, run_journal, serving
from emulator.images import instance_kind
from emulator.session import (
    CLOUD_INSTANCE_TYPE_ATTRIBUTE,
    LocalRLSession,
    job_log_path,
    refuse_calls_off_this_machine,
)

S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL_S3"
GPU_ENV = "SMRL_RUN_GPU"
REFUSED_CONNECTIONS_LOG = "refused-connections.log"
RUN_MARKER_ENV = "SMRL_RUN"
SMOKE_STEPS_ENV = "SMRL_SMOKE_STEPS"
# The SDK's own default_bucket(), kept before install() rebinds the SDK's session classes.
_SDK_DEFAULT_BUCKET = sagemaker.session.Session.default_bucket


def run_environment(s3_endpoint: str, region: str, work_dir: str, gpu: bool,
                    base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: the host's, without its AWS settings and credentials, plus
    placeholders, the region and the local S3 endpoint (which the AWS CLI reads too)."""
    env = {k: v for k, v in (base if base is not None else os.environ).items()
           if not k.startswith("AWS_")}
    env.update({
        "AWS_ACCESS_KEY_ID": contract.PLACEHOLDER_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": contract.PLACEHOLDER_SECRET_KEY,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        S3_ENDPOINT_ENV: s3_endpoint,
        resources.WORK_DIR_ENV: work_dir,
        GPU_ENV: "1" if gpu else "0",
        RUN_MARKER_ENV: "1",
    })
    # `aws`, `python` and `pip` in the user's shell escapes are this environment's.
    env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
    return env


class RunSession(LocalRLSession):
    """The session every ``sagemaker.Session()`` / ``LocalSession()`` of a run gets: the
    emulator's offline session, with S3 on the local server."""

    def __init__(self, boto_session: Any = None, *args: Any, default_bucket: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(boto_session or boto3.Session(), resources.work_dir(),
                         s3_endpoint_url=os.environ.get(S3_ENDPOINT_ENV), default_bucket=default_bucket)

    def default_bucket(self) -> str:
        """The SDK's own default bucket (``sagemaker-<region>-<account>`` unless the code named
        one), made on the local S3."""
        return _SDK_DEFAULT_BUCKET(self)


def _local_instance_type(instance_type: Any) -> Any:
    if not isinstance(instance_type, str) or not instance_type.startswith("ml."):
        return instance_type
    gpu = instance_kind(instance_type) == "gpu" and os.environ.get(GPU_ENV) == "1"
    local = "local_gpu" if gpu else "local"
    _say_once(f"smrl-local run: instance type {instance_type} runs locally as {local!r}")
    return local


_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr, flush=True)


def _mapping_instance_types(init: Callable) -> Callable:
    @functools.wraps(init)
    def mapped(self: Any, *args: Any, **kwargs: Any) -> None:
        asked = kwargs.get("instance_type")
        if asked is not None:
            kwargs["instance_type"] = _local_instance_type(asked)
        init(self, *args, **kwargs)
        if isinstance(asked, str) and asked.startswith("ml."):
            setattr(self, CLOUD_INSTANCE_TYPE_ATTRIBUTE, asked)

    return mapped


def _mapping_deploy(deploy: Callable) -> Callable:
    @functools.wraps(deploy)
    def mapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "instance_type" in kwargs:
            kwargs["instance_type"] = _local_instance_type(kwargs["instance_type"])
        elif len(args) >= 2:
            args = (args[0], _local_instance_type(args[1]), *args[2:])
        predictor = deploy(self, *args, **kwargs)
        run_journal.record(run_journal.DEPLOY, estimator=id(self), endpoint=getattr(predictor, "endpoint_name", None),
                           entry_point=kwargs.get("entry_point"),
                           model_data=getattr(self, "model_data", None))
        return predictor

    return mapped


def _recording_rl_estimators(init: Callable) -> Callable:
    """RLEstimator.__init__ that journals the arguments as written and, in a pre-flight,
    shrinks the training budget (the key is added last, so it wins over the code's own)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs).arguments
        arguments = {name: value for name, value in bound.items() if name not in ("self", "kwargs")}
        arguments.update({k: v for k, v in bound.get("kwargs", {}).items() if k != "sagemaker_session"})
        run_journal.record(run_journal.ESTIMATOR, estimator=id(self), arguments=arguments)
        steps = os.environ.get(SMOKE_STEPS_ENV)
        if steps:
            self.set_hyperparameters(**{contract.IMPROVE_STEPS_PARAM: int(steps)})

    return recording


def _recording_fits(fit: Callable) -> Callable:
    @functools.wraps(fit)
    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(self, sagemaker.rl.estimator.RLEstimator):
            return fit(self, *args, **kwargs)
        started, error = time.monotonic(), None
        try:
            return fit(self, *args, **kwargs)
        except BaseException as raised:
            error = f"{type(raised).__name__}: {raised}"
            raise
        finally:
            job, session = str(self._current_job_name), self.sagemaker_session
            artifacts = getattr(session, "artifacts_dirs", {}).get(job)
            work_dir = getattr(session, "work_dir", resources.work_dir())
            run_journal.record(run_journal.FIT, estimator=id(self), job=job, error=error,
                               seconds=time.monotonic() - started, log=job_log_path(work_dir, job),
                               artifacts=artifacts, inputs=(args[0] if args else kwargs.get("inputs")),
                               smoke_steps=os.environ.get(SMOKE_STEPS_ENV))

    return recording


def _recording_predictions(predict: Callable) -> Callable:
    @functools.wraps(predict)
    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            answer = predict(self, *args, **kwargs)
        except Exception as error:
            run_journal.record(run_journal.PREDICT, endpoint=self.endpoint_name,
                               error=f"{type(error).__name__}: {error}")
            raise
        run_journal.record(run_journal.PREDICT, endpoint=self.endpoint_name, error=None)
        return answer

    return recording


def _recording_deletes(delete_endpoint: Callable) -> Callable:
    @functools.wraps(delete_endpoint)
    def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        done = delete_endpoint(self, *args, **kwargs)
        run_journal.record(run_journal.DELETE_ENDPOINT, endpoint=self.endpoint_name)
        return done

    return recording


def _answering_locally(create_client: Callable) -> Callable:
    @functools.wraps(create_client)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = local_aws.answer_locally(create_client(self, *args, **kwargs))
        client.meta.events.register("before-send", refuse_calls_off_this_machine)
        return client

    return create


class ConnectionOffThisMachine(ConnectionRefusedError):
    """The run's code tried to connect beyond this machine."""


def _is_this_machine(host: str) -> bool:
    if host == "localhost" or host in serving.endpoint_addresses:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse_connections_off_this_machine(event: str, args: tuple) -> None:
    if event != "socket.connect" or not isinstance(args[1], tuple) or not args[1]:
        return  # AF_UNIX (the Docker engine's socket) and the like
    host = str(args[1][0])
    if _is_this_machine(host):
        return
    line = f"smrl-local run keeps the code on this machine: refused a connection to {host}:{args[1][1]}"
    with open(resources.work_dir() / REFUSED_CONNECTIONS_LOG, "a") as log:
        log.write(line + "\n")
    raise ConnectionOffThisMachine(line)


def install() -> None:
    """Installs everything the module docstring lists, once per process."""
    if getattr(botocore.session.Session.create_client, "smrl_run", False):
        return
    resources.work_dir().mkdir(parents=True, exist_ok=True)
    sys.addaudithook(_refuse_connections_off_this_machine)
    # The run's credentials and endpoint come from its environment; botocore would say so at
    # INFO on every client (the SDK leaves the root logger at INFO).
    logging.getLogger("botocore").setLevel(logging.WARNING)
    create_client = _answering_locally(botocore.session.Session.create_client)
    create_client.smrl_run = True  # type: ignore[attr-defined]
    botocore.session.Session.create_client = create_client
    originals = (sagemaker.session.Session, LocalSession)
    for module in [m for name, m in sys.modules.items() if name.startswith("sagemaker") and m is not None]:
        for attribute, value in list(vars(module).items()):
            # LocalSession's own module keeps the name: its __init__ calls super(LocalSession, self).
            defining = value is LocalSession and module.__name__ == LocalSession.__module__
            if any(value is original for original in originals) and not defining:
                setattr(module, attribute, RunSession)
    role = contract.PLACEHOLDER_ROLE
    sagemaker.get_execution_role = sagemaker.session.get_execution_role = lambda *a, **k: role
    sagemaker.estimator.EstimatorBase.__init__ = _mapping_instance_types(  # type: ignore[method-assign]
        sagemaker.estimator.EstimatorBase.__init__)
    sagemaker.model.Model.deploy = _mapping_deploy(sagemaker.model.Model.deploy)  # type: ignore[method-assign]
    sagemaker.estimator.EstimatorBase.deploy = _mapping_deploy(  # type: ignore[method-assign]
        sagemaker.estimator.EstimatorBase.deploy)
    rl_estimator = sagemaker.rl.estimator.RLEstimator
    rl_estimator.__init__ = _recording_rl_estimators(rl_estimator.__init__)  # type: ignore[method-assign]
    sagemaker.estimator.EstimatorBase.fit = _recording_fits(  # type: ignore[method-assign]
        sagemaker.estimator.EstimatorBase.fit)
    predictor = sagemaker.predictor.Predictor
    predictor.predict = _recording_predictions(predictor.predict)  # type: ignore[method-assign]
    predictor.delete_endpoint = _recording_deletes(predictor.delete_endpoint)  # type: ignore[method-assign]
