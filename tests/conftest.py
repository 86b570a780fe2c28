"""Shared fixtures."""

from __future__ import annotations

import os

import pytest


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def docker_engine():
    """A docker-py client for a ready engine.

    Without one, integration tests fail in CI (a missing engine there is a broken
    pipeline, not a reason to pass) and are skipped elsewhere.
    """
    from emulator.engine import check_engine, require_engine

    problems = check_engine()
    if problems:
        reason = "Docker engine not ready: " + " ".join(problems)
        if _in_ci():
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    client = require_engine()
    yield client
    client.close()
