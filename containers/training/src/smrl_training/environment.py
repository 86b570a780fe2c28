"""Reads what SageMaker handed the container and exposes it as SM_* variables.

The names follow the sagemaker-training toolkit, which user scripts read
(`os.environ["SM_MODEL_DIR"]`, `SM_CHANNEL_TRAINING`, `SM_HPS`, ...).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smrl_training import contract


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
    resource_config: dict[str, Any]
    input_data_config: dict[str, Any]
    reserved: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_files(cls) -> "TrainingEnvironment":
        raw = {k: _decode(v) for k, v in _read_json(contract.HYPERPARAMETERS_FILE, {}).items()}
        user = {k: v for k, v in raw.items() if not k.startswith(contract.RESERVED_PARAM_PREFIX)}
        reserved = {k: v for k, v in raw.items() if k.startswith(contract.RESERVED_PARAM_PREFIX)}
        return cls(
            hyperparameters=user,
            resource_config=_read_json(contract.RESOURCE_CONFIG_FILE, {}),
            input_data_config=_read_json(contract.INPUT_DATA_CONFIG_FILE, {}),
            reserved=reserved,
        )

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

    @property
    def hosts(self) -> list[str]:
        return self.resource_config.get("hosts", ["algo-1"])

    @property
    def current_host(self) -> str:
        return self.resource_config.get("current_host", self.hosts[0])

    def user_args(self) -> list[str]:
        """Hyperparameters as `--name value` pairs, the way SageMaker passes them to scripts."""
        args: list[str] = []
        for name, value in self.hyperparameters.items():
            text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            args += [f"--{name}", text]
        return args

    def sm_variables(self) -> dict[str, str]:
        channels = sorted(self.input_data_config)
        env = {
            "SM_MODEL_DIR": str(contract.MODEL_DIR),
            "SM_INPUT_DIR": str(contract.INPUT_DIR),
            "SM_INPUT_CONFIG_DIR": str(contract.INPUT_CONFIG_DIR),
            "SM_OUTPUT_DIR": str(contract.OUTPUT_DIR),
            "SM_OUTPUT_DATA_DIR": str(contract.OUTPUT_DATA_DIR),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(contract.OUTPUT_INTERMEDIATE_DIR),
            "SM_MODULE_DIR": str(self.code_dir),
            "SM_USER_ENTRY_POINT": self.program or "",
            "SM_HOSTS": json.dumps(self.hosts),
            "SM_CURRENT_HOST": self.current_host,
            "SM_NUM_CPUS": str(os.cpu_count() or 1),
            "SM_NUM_GPUS": str(_count_gpus()),
            "SM_CHANNELS": json.dumps(channels),
            "SM_HPS": json.dumps(self.hyperparameters),
            "SM_USER_ARGS": json.dumps(self.user_args()),
            "SM_RESOURCE_CONFIG": json.dumps(self.resource_config),
            "SM_INPUT_DATA_CONFIG": json.dumps(self.input_data_config),
        }
        for channel in channels:
            env[f"SM_CHANNEL_{channel.upper()}"] = str(contract.INPUT_DATA_DIR / channel)
        for name, value in self.hyperparameters.items():
            env[f"SM_HP_{name.upper()}"] = json.dumps(value) if not isinstance(value, str) else value
        return env


def _count_gpus() -> int:
    devices = Path("/proc/driver/nvidia/gpus")
    return len(list(devices.iterdir())) if devices.is_dir() else 0
