"""AWS calls of cloud notebooks, answered in-process: what ran here, or a refusal naming the call."""

from __future__ import annotations

import boto3
import pytest

from emulator import contract
from emulator.local_aws import AWSCallRefused, answer, answer_locally


@pytest.fixture
def aws(monkeypatch):
    """A boto3 session with placeholder keys whose every client answers locally."""
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_DEFAULT_REGION": "us-west-2",
                        "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    session = boto3.Session()
    return lambda service: answer_locally(session.client(service))


def test_the_caller_is_the_placeholder_account(aws):
    assert aws("sts").get_caller_identity()["Account"] == contract.PLACEHOLDER_ACCOUNT


def test_a_role_is_found_or_made_in_the_placeholder_account(aws):
    iam = aws("iam")
    assert iam.get_role(RoleName="sagemaker")["Role"]["Arn"] == "arn:aws:iam::000000000000:role/sagemaker"
    assert iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")["Role"]["RoleName"] == "r"
    iam.attach_role_policy(RoleName="r", PolicyArn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess")


def test_a_training_job_that_did_not_run_here_is_the_sdks_validation_error(aws):
    sagemaker_client = aws("sagemaker")
    with pytest.raises(sagemaker_client.exceptions.ClientError, match="Could not find local training job"):
        sagemaker_client.describe_training_job(TrainingJobName="never-ran")


def test_training_jobs_and_endpoints_are_listed_from_this_process(aws):
    sagemaker_client = aws("sagemaker")
    assert sagemaker_client.list_training_jobs()["TrainingJobSummaries"] == []
    assert sagemaker_client.list_endpoints()["Endpoints"] == []


def test_any_other_call_is_refused_naming_the_service_and_operation(aws):
    with pytest.raises(AWSCallRefused, match="^ec2 DescribeInstances has no local stand-in"):
        aws("ec2").describe_instances()
    with pytest.raises(AWSCallRefused, match="sagemaker CreateNotebookInstance"):
        answer("sagemaker", "CreateNotebookInstance", {})
