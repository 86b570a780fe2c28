"""Shared fixtures."""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from emulator import contract

REPO = Path(__file__).resolve().parent.parent
# Unit tests import the images' pure modules on the host: their source folders go on the
# path, and `smrl_contract` (the build copies emulator/contract.py into both images under
# that name) is the host's module itself.
sys.path[:0] = [str(REPO / "containers" / "training" / "src"), str(REPO / "containers" / "inference" / "src")]
sys.modules.setdefault("smrl_contract", contract)
# Public SageMaker RL code kept byte for byte (see its README); SMRL_CONFORMANCE_DIR moves it.
CONFORMANCE_DIR = Path(os.environ.get("SMRL_CONFORMANCE_DIR") or REPO.parent / "shared" / "conformance")
RL_EXAMPLES = CONFORMANCE_DIR / "amazon-sagemaker-examples" / "reinforcement_learning"


def pytest_collection_modifyitems(items):
    """A test that needs the Docker engine (through any fixture) is an integration test:
    `make check` runs the others, with no engine and no images."""
    for item in items:
        if "docker_engine" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture(scope="session")
def training_image_ready(docker_engine) -> str:
    from emulator.images import build_image, training_image

    build_image("training", "cpu", log=lambda line: None)
    return training_image("cpu")


@pytest.fixture(scope="session")
def inference_image_ready(docker_engine) -> str:
    from emulator.images import build_image, inference_image

    build_image("inference", "cpu", log=lambda line: None)
    return inference_image("cpu")


def job_container_count(client) -> int:
    """Containers that local-mode jobs and endpoints created (compose labels them); other
    work may share the engine."""
    return len(client.containers.list(all=True, filters={"label": "com.docker.compose.project"}))


@pytest.fixture(scope="session")
def dqn_run(docker_engine, training_image_ready, tmp_path_factory):
    """The CartPole DQN preset trained to its default budget, as `make local-train` does."""
    from emulator.training import train

    before = job_container_count(docker_engine)
    result = train(output_dir=tmp_path_factory.mktemp("dqn"), build=False, log=lambda line: None)
    assert job_container_count(docker_engine) == before
    return result


@pytest.fixture(scope="session")
def rl_examples() -> Path:
    """The public examples' reinforcement_learning/ folder. Absent, tests skip, except in CI,
    where they fail: the conformance cases are part of the pipeline."""
    if (RL_EXAMPLES / "rl_cartpole_coach").is_dir():
        return RL_EXAMPLES
    reason = (f"No conformance cases at {CONFORMANCE_DIR} (set SMRL_CONFORMANCE_DIR, or get them from "
              "aws/amazon-sagemaker-examples at commit d015633931ffa0ff5ae782c44be9781b6b25408b).")
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether `condition` became true within `seconds` (polled every 20 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def make_tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    """A tar.gz at `path` holding `files` (member name -> content); returns `path`."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def gzip_bomb(path: Path, unpacked_bytes: int, members: int = 1) -> Path:
    """A model.tar.gz whose `members` files of zeros unpack to `unpacked_bytes` in all,
    written in a second or so: the tar stream is a series of gzip members (which gzip
    readers join), blocks of zeros compressed once and written again and again."""
    size = unpacked_bytes // members
    blocks = [(n, gzip.compress(bytes(n), compresslevel=9)) for n in (64 * 1024**2, 1024**2)]
    with open(path, "wb") as out:
        for index in range(members):
            header = tarfile.TarInfo(f"part-{index}.bin")
            header.size = size
            out.write(gzip.compress(header.tobuf(format=tarfile.GNU_FORMAT)))
            left = size
            for length, packed in blocks:
                count, left = divmod(left, length)
                out.write(packed * count)
            out.write(gzip.compress(bytes(left + (-size) % tarfile.BLOCKSIZE)))
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE)))
    return path
