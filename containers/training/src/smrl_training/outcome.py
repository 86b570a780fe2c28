"""The job's outcome files under /opt/ml/output, written in one place.

SageMaker shows the first lines of `failure` as the job's FailureReason; the training
toolkit leaves an empty `success` when the entry point exited 0. Both the `train` entry
point and the Coach launcher (a user error in a preset or hyperparameter) write them here.
Standard library and the contract only: the host's unit tests import this module.
"""
from __future__ import annotations

from pathlib import Path

import smrl_contract as contract


def write_failure(message: str, failure_file: Path = contract.FAILURE_FILE) -> None:
    """Writes `message` as the job's failure reason (replacing any earlier one)."""
    try:
        failure_file.parent.mkdir(parents=True, exist_ok=True)
        failure_file.write_text(message)
    except OSError:
        pass  # a read-only /opt/ml/output must not hide the original error


def write_success(success_file: Path = contract.SUCCESS_FILE) -> None:
    """The empty marker the SageMaker training toolkit leaves when the entry point succeeded."""
    try:
        success_file.touch()
    except OSError:
        pass
