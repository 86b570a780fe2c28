"""Reads a job description: the estimator a user would send to the cloud, as they wrote it.

Two forms:

* a Python file that builds `RLEstimator(...)` for the cloud (and may go on to call
  `.fit()` and `.deploy(...)`). It runs with `RLEstimator` replaced by a recorder: the
  constructor's arguments, the `fit()` inputs and the `deploy()` arguments are captured,
  and nothing is sent anywhere;
* a YAML or TOML file with the same fields: an `estimator:` table of RLEstimator arguments
  (toolkit/framework as "coach"/"mxnet"), optional `fit:` and `deploy:` tables.
"""

from __future__ import annotations

import contextlib
import io
import runpy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sagemaker.rl
import sagemaker.rl.estimator
import tomllib
import yaml
from sagemaker.rl import RLFramework, RLToolkit

from emulator.errors import UserError


class JobSpecError(UserError, ValueError):
    """The job description cannot be read; the message says what to fix."""


@dataclass
class JobSpec:
    """What the user's job would send to SageMaker."""

    path: Path
    estimator: dict[str, Any]
    fit: dict[str, Any] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)
    # Whether a Python job file deleted the endpoint it deployed (None: nothing deployed, or
    # a YAML/TOML job, which describes no script).
    endpoint_deleted: bool | None = None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, value: str | Path) -> Path:
        """A path of the job (entry point folder, dependency) relative to the job file."""
        path = Path(value)
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def hyperparameters(self) -> dict[str, Any]:
        return dict(self.estimator.get("hyperparameters") or {})

    @property
    def source_dir(self) -> Path | None:
        given = self.estimator.get("source_dir")
        return self.resolve(given) if given else None

    @property
    def entry_point_path(self) -> Path | None:
        entry_point = self.estimator.get("entry_point")
        if entry_point is None:
            return None
        return (self.source_dir / entry_point) if self.source_dir else self.resolve(entry_point)

    @property
    def entry_point_file(self) -> Path:
        """The entry point's path; a JobSpecError when the estimator names none."""
        if self.entry_point_path is None:
            raise JobSpecError(f"{self.path.name}: the estimator has no entry_point. Pass entry_point='train.py' "
                               "(and source_dir).")
        return self.entry_point_path

    @property
    def code_dir(self) -> Path:
        """What the cloud packs as the job's code: source_dir, or the entry point's folder."""
        return self.source_dir or self.entry_point_file.parent


def load(path: str | Path) -> JobSpec:
    """Reads a .py, .yaml/.yml or .toml job description."""
    path = Path(path).resolve()
    if not path.is_file():
        raise JobSpecError(f"No job description at {path}. Pass a .py, .yaml or .toml file.")
    if path.suffix == ".py":
        return _from_python(path)
    if path.suffix in (".yaml", ".yml"):
        return from_mapping(path, yaml.safe_load(path.read_text()) or {})
    if path.suffix == ".toml":
        return from_mapping(path, tomllib.loads(path.read_text()))
    raise JobSpecError(f"{path.name}: a job description is a .py, .yaml/.yml or .toml file.")


def from_mapping(path: Path, data: dict[str, Any]) -> JobSpec:
    """A job from its fields (an ``estimator`` table, optional ``fit`` and ``deploy``), as
    written in a YAML/TOML job file or recorded from a notebook; `path` is what relative
    paths are relative to."""
    if "estimator" not in data:
        raise JobSpecError(f"{path.name} has no 'estimator' table: put the RLEstimator arguments under it.")
    estimator = dict(data["estimator"])
    if isinstance(estimator.get("toolkit"), str):
        estimator["toolkit"] = _enum(RLToolkit, estimator["toolkit"], "toolkit", path)
    if isinstance(estimator.get("framework"), str):
        estimator["framework"] = _enum(RLFramework, estimator["framework"], "framework", path)
    return JobSpec(path, estimator, dict(data.get("fit") or {}), dict(data.get("deploy") or {}))


def _enum(kind: Any, text: str, name: str, path: Path) -> Any:
    for member in kind:
        if text.lower() in (member.name.lower(), str(member.value).lower()):
            return member
    choices = ", ".join(m.value for m in kind)
    raise JobSpecError(f"{path.name}: {name} {text!r} is not one of {choices}.")


class _Recorder:
    """Stands in for RLEstimator while the job file runs: records, never calls AWS."""

    captured: list[_Recorder] = []
    real: Any = None  # the SDK's RLEstimator, for its class methods

    def __init__(self, **kwargs: Any):
        self.kwargs = kwargs
        self.fit_kwargs: dict[str, Any] = {}
        self.deploy_kwargs: dict[str, Any] = {}
        self.predictor: _RecordedPredictor | None = None
        _Recorder.captured.append(self)

    def fit(self, inputs: Any = None, **kwargs: Any) -> None:
        self.fit_kwargs = {"inputs": inputs, **kwargs}

    def deploy(self, *args: Any, **kwargs: Any) -> _RecordedPredictor:
        names = ("initial_instance_count", "instance_type")
        self.deploy_kwargs = {**dict(zip(names, args)), **kwargs}
        self.predictor = _RecordedPredictor()
        return self.predictor

    @classmethod
    def default_metric_definitions(cls, toolkit: Any) -> list[dict[str, str]]:
        return cls.real.default_metric_definitions(toolkit)


class _RecordedPredictor:
    def __init__(self) -> None:
        self.deleted = False

    def predict(self, *args: Any, **kwargs: Any) -> None:
        return None

    def delete_endpoint(self, *args: Any, **kwargs: Any) -> None:
        self.deleted = True


@contextlib.contextmanager
def _recording() -> Iterator[None]:
    originals = (sagemaker.rl.RLEstimator, sagemaker.rl.estimator.RLEstimator)
    _Recorder.captured, _Recorder.real = [], originals[0]
    sagemaker.rl.RLEstimator = sagemaker.rl.estimator.RLEstimator = _Recorder  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        sagemaker.rl.RLEstimator, sagemaker.rl.estimator.RLEstimator = originals  # type: ignore[misc]


def _from_python(path: Path) -> JobSpec:
    with _recording(), contextlib.redirect_stdout(io.StringIO()):
        try:
            # As `python job.py` would run it, so fit()/deploy() calls are recorded too.
            runpy.run_path(str(path), run_name="__main__")
        except SystemExit:
            pass
        except Exception as error:
            raise JobSpecError(f"{path.name} raised {type(error).__name__}: {error} while building the job. "
                               "Fix the job file; it should build an RLEstimator.") from error
        captured = list(_Recorder.captured)
    if not captured:
        raise JobSpecError(f"{path.name} built no RLEstimator. A job file builds `RLEstimator(...)` "
                           "(from sagemaker.rl) at module level or under `if __name__ == '__main__':`.")
    recorder = captured[-1]
    deleted = recorder.predictor.deleted if recorder.predictor else None
    return JobSpec(path, recorder.kwargs, recorder.fit_kwargs, recorder.deploy_kwargs, deleted)
