"""The AWS calls cloud notebooks make around SageMaker, answered in-process, without a network.

Public SageMaker examples call, besides S3 (served by ``emulator.s3``): STS
``GetCallerIdentity`` for the account, IAM ``GetRole`` / ``CreateRole`` /
``AttachRolePolicy`` for the execution role, and SageMaker ``DescribeTrainingJob`` while they
wait for a job's outputs. ``answer_locally`` registers a handler on botocore's
``before-call`` event of a client (the hook botocore's own Stubber uses): these operations
return what ran on this machine (the local-mode jobs and endpoints the SDK recorded), and
every other operation of every other service is refused, naming it, before anything is sent.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from sagemaker.local.local_session import LocalSagemakerClient

from emulator import contract
from emulator.errors import UserError

# Services that reach a server on this machine (the local S3): their calls are sent.
SENT_TO_LOCAL_SERVERS = frozenset({"s3"})
ROLE_NAME = contract.PLACEHOLDER_ROLE.rsplit("/", 1)[1]

Params = dict[str, Any]


class AWSCallRefused(UserError, RuntimeError):
    """User code called an AWS operation that has no local stand-in."""


def _client_error(operation: str, code: str, message: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


# -- STS and IAM: one placeholder account, roles accepted as asked -------------------------

def _caller_identity(params: Params) -> Params:
    return {"Account": contract.PLACEHOLDER_ACCOUNT, "UserId": "SMRLLOCALUSER",
            "Arn": f"arn:aws:iam::{contract.PLACEHOLDER_ACCOUNT}:user/sagemaker-rl-local"}


def _role(name: str) -> Params:
    return {"Role": {"Path": "/", "RoleName": name, "RoleId": "SMRLLOCALROLE",
                     "Arn": f"arn:aws:iam::{contract.PLACEHOLDER_ACCOUNT}:role/{name}", "CreateDate": _now(),
                     "AssumeRolePolicyDocument": "{}"}}


def _get_role(params: Params) -> Params:
    return _role(params["RoleName"])


def _create_role(params: Params) -> Params:
    return _role(params["RoleName"])


def _nothing(params: Params) -> Params:
    return {}


# -- SageMaker: the jobs and endpoints that ran here ---------------------------------------

def _describe_training_job(params: Params) -> Params:
    return LocalSagemakerClient().describe_training_job(params["TrainingJobName"])


def _list_training_jobs(params: Params) -> Params:
    summaries = []
    for name, job in LocalSagemakerClient._training_jobs.items():
        described = job.describe()
        summaries.append({"TrainingJobName": name, "TrainingJobStatus": described["TrainingJobStatus"],
                          "TrainingJobArn": f"arn:aws:sagemaker:local:{contract.PLACEHOLDER_ACCOUNT}:"
                                            f"training-job/{name}",
                          "CreationTime": described.get("CreationTime", _now())})
    contains = params.get("NameContains")
    summaries = [s for s in summaries if not contains or contains in s["TrainingJobName"]]
    return {"TrainingJobSummaries": summaries}


def _describe_endpoint(params: Params) -> Params:
    return LocalSagemakerClient().describe_endpoint(params["EndpointName"])


def _list_endpoints(params: Params) -> Params:
    endpoints = []
    for name in list(LocalSagemakerClient._endpoints):
        described = LocalSagemakerClient().describe_endpoint(name)
        endpoints.append({"EndpointName": name, "EndpointStatus": described["EndpointStatus"],
                          "EndpointArn": described.get("EndpointArn", name),
                          "CreationTime": described.get("CreationTime", _now())})
    return {"Endpoints": endpoints}


ANSWERS: dict[tuple[str, str], Callable[[Params], Params]] = {
    ("sts", "GetCallerIdentity"): _caller_identity,
    ("iam", "GetRole"): _get_role,
    ("iam", "CreateRole"): _create_role,
    ("iam", "AttachRolePolicy"): _nothing,
    ("iam", "PutRolePolicy"): _nothing,
    ("sagemaker", "DescribeTrainingJob"): _describe_training_job,
    ("sagemaker", "ListTrainingJobs"): _list_training_jobs,
    ("sagemaker", "DescribeEndpoint"): _describe_endpoint,
    ("sagemaker", "ListEndpoints"): _list_endpoints,
}


def answer(service: str, operation: str, params: Params) -> Params:
    """The local answer to one AWS operation, as botocore parses a response.

    Raises:
        AWSCallRefused: the operation has no local stand-in.
        ClientError: it has one, and the request names something that did not run here.
    """
    handler = ANSWERS.get((service, operation))
    if handler is None:
        served = ", ".join(f"{s} {o}" for s, o in ANSWERS)
        raise AWSCallRefused(
            f"{service} {operation} has no local stand-in, and sagemaker-rl-local never calls AWS. "
            f"Answered locally: S3 (the local server), {served}. Run this part of the code in the cloud, "
            "or guard it with a check for local runs."
        )
    try:
        return handler(params)
    except KeyError as error:
        raise _client_error(operation, "ValidationException", f"missing parameter {error}") from None


def _keep_api_params(params: Params, context: dict, **_: Any) -> None:
    # before-call sees the serialised request; the operation's own parameters are kept here.
    context["smrl_api_params"] = dict(params)


def _on_before_call(model: Any, context: dict, **_: Any) -> tuple[AWSResponse, Params] | None:
    service = model.service_model.service_name
    if service in SENT_TO_LOCAL_SERVERS:
        return None
    metadata = {"HTTPStatusCode": 200, "RequestId": "smrl-local"}
    try:
        parsed = answer(service, model.name, context.get("smrl_api_params", {}))
    except ClientError as error:
        metadata["HTTPStatusCode"] = 400
        return AWSResponse(None, 400, {}, None), {"Error": error.response["Error"], "ResponseMetadata": metadata}
    return AWSResponse(None, 200, {}, None), {**parsed, "ResponseMetadata": metadata}


def answer_locally(client: Any) -> Any:
    """Makes `client` (a botocore client) answer locally as the module docstring says; returns it."""
    client.meta.events.register("before-parameter-build.*.*", _keep_api_params)
    client.meta.events.register("before-call.*.*", _on_before_call)
    return client
