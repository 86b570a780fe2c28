"""Fixtures for users who test their own SageMaker RL code (pytest plugin ``sagemaker_rl_local``).

Installed with the package (entry point ``pytest11``), so in any test::

    def test_my_policy_balances_the_pole(smrl_endpoint):
        predictor = smrl_endpoint()                     # the CartPole DQN preset, trained and served
        assert len(predictor.predict([0.0, 0.1, 0.0, -0.1])["predictions"][0]) == 2

* ``smrl_session``: an offline ``sagemaker.local.LocalSession`` for ``RLEstimator(...,
  instance_type="local", sagemaker_session=smrl_session)``; its work folder is the test's
  temp folder.
* ``smrl_trained_model``: a function ``(preset="preset-cartpole-dqn", steps=None, **train_args)``
  that trains a preset (``emulator.training.train``) and returns its ``TrainingResult``.
* ``smrl_endpoint``: a function ``(model_data=None, **endpoint_args)`` that serves a model
  (by default a freshly trained DQN) and returns its predictor.

Every container, endpoint and temp folder is removed after the test. The imports happen
inside the fixtures: this module is loaded by every pytest run of the environment, and the
SageMaker SDK takes seconds to import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def smrl_session(tmp_path: Path) -> Any:
    """An offline local-mode session with its work folder in the test's temp folder."""
    from emulator.session import local_session

    return local_session(work_dir=tmp_path / "smrl-session")


@pytest.fixture
def smrl_trained_model(tmp_path: Path) -> Callable[..., Any]:
    """Trains a preset in local mode; returns the job's TrainingResult (model_data, metrics, ...)."""
    from emulator.training import train

    def trained(preset: str = "preset-cartpole-dqn", steps: int | None = None, **train_args: Any) -> Any:
        train_args.setdefault("output_dir", tmp_path / "smrl-output")
        train_args.setdefault("log", lambda line: None)
        return train(preset, steps=steps, **train_args)

    return trained


@pytest.fixture
def smrl_endpoint(smrl_trained_model: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Serves a model on 127.0.0.1 with the SageMaker endpoint contract; returns its predictor."""
    from emulator.endpoints import endpoint

    with contextlib.ExitStack() as stack:
        def served(model_data: str | Path | None = None, **endpoint_args: Any) -> Any:
            model = model_data or smrl_trained_model(steps=2000).model_data
            return stack.enter_context(endpoint(model, **endpoint_args))

        yield served
