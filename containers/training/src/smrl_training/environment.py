"""Reads what SageMaker handed the container: the entry point and its arguments.

Pure (standard library and the contract only), so the host's unit tests import it. The
SM_* variables user scripts read come from the sagemaker-training toolkit itself; see
`smrl_training.entry_point`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smrl_contract as contract


def _read_json(path: Path, default: Any) -> Any:
    if not path.exists():
        return default
    return json.loads(path.read_text())


def _decode(value: Any) -> Any:
    """The SDK stores every hyperparameter as a JSON-encoded string; decode it back."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


@dataclass
class TrainingEnvironment:
    """One training job as seen from inside the container."""

    hyperparameters: dict[str, Any]
    reserved: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_files(cls, hyperparameters_file: Path = contract.HYPERPARAMETERS_FILE) -> TrainingEnvironment:
        """The job in `hyperparameters_file` (no file: a job with no hyperparameters)."""
        raw = {k: _decode(v) for k, v in _read_json(hyperparameters_file, {}).items()}
        user = {k: v for k, v in raw.items() if not k.startswith(contract.RESERVED_PARAM_PREFIX)}
        reserved = {k: v for k, v in raw.items() if k.startswith(contract.RESERVED_PARAM_PREFIX)}
        return cls(hyperparameters=user, reserved=reserved)

    @property
    def program(self) -> str | None:
        return self.reserved.get(contract.PROGRAM_PARAM)

    @property
    def code_dir(self) -> Path:
        submitted = self.reserved.get(contract.SUBMIT_DIR_PARAM)
        # Local mode mounts a local source_dir at /opt/ml/code; anything else (s3://) was
        # never downloaded, because this image does not talk to S3.
        if submitted and not str(submitted).startswith("s3://"):
            return Path(submitted)
        return contract.CODE_DIR

    def user_args(self) -> list[str]:
        """Hyperparameters as `--name value` pairs, the way SageMaker passes them to scripts."""
        args: list[str] = []
        for name, value in self.hyperparameters.items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            args += [f"--{name}", text]
        return args
