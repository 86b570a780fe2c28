"""End-to-end figures, container start-up included: what local mode adds around a job or an endpoint.

* `fit()` of a no-op entry point through `emulator.local_session()` and the real SDK,
  against a plain `docker run` of the same image running the same no-op script;
* the serving image from `docker run ... serve` to the first 200 on /ping (127.0.0.1),
  and through `emulator.endpoint` where that exists.

The figures are pytest-benchmark's own round times.
"""
from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest

from benchmarks.conftest import round_times
from benchmarks.harness import LABEL, docker, extract_model, free_port, image_info, wait_for_ping

NOOP_DIR = Path(__file__).resolve().parent / "fixtures" / "noop"
ROUNDS = 3
# An SDK deploy takes several seconds (the SDK polls /ping every 5 s).
ENDPOINT_ROUNDS = 2


@pytest.fixture(scope="session")
def sdk_session(engine, tmp_path_factory):
    """The emulator's offline session (imported once: `import sagemaker` alone takes seconds)."""
    from emulator.engine import require_engine
    from emulator.images import default_region, ensure_sdk_tags
    from emulator.session import local_session

    client = require_engine()
    try:
        ensure_sdk_tags(default_region(), client)
    finally:
        client.close()
    return local_session(work_dir=tmp_path_factory.mktemp("sdk"))


def test_docker_run_noop(benchmark, record, training_image, variant):
    """The baseline: one container, no SDK, the same no-op script."""
    gpu = ["--gpus", "all"] if variant == "gpu" else []

    def run() -> None:
        docker("run", "--rm", "--network", "none", *gpu, "-v", f"{NOOP_DIR}:/opt/ml/code:ro",
               training_image, "python3", "/opt/ml/code/noop.py")

    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record("docker-run-noop", variant, round_times(benchmark), training_image, envs=0, **image_info(training_image))


def test_fit_noop(benchmark, record, training_image, sdk_session, variant, tmp_path):
    """`RLEstimator(...).fit()` of the no-op entry point: the SDK's local mode around the same container."""
    from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

    def fit() -> None:
        estimator = RLEstimator(
            entry_point="noop.py", source_dir=str(NOOP_DIR),
            toolkit=RLToolkit.COACH, toolkit_version="0.11.0", framework=RLFramework.MXNET,
            role="sagemaker-rl-local", instance_type="local_gpu" if variant == "gpu" else "local",
            instance_count=1, output_path=(tmp_path / uuid.uuid4().hex).as_uri(),
            sagemaker_session=sdk_session,
        )
        estimator.fit(wait=True, logs=False)

    benchmark.pedantic(fit, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record("fit-noop", variant, round_times(benchmark), training_image, envs=0, **image_info(training_image))


@pytest.fixture(scope="session")
def policy_model_dir(policy_archive, tmp_path_factory) -> Path:
    _, archive = policy_archive
    return extract_model(archive, tmp_path_factory.mktemp("model") / "model")


def test_deploy_docker_run(benchmark, record, inference_image, policy_model_dir, variant):
    """`docker run IMAGE serve` with the exported policy until /ping first answers 200."""
    started: list[str] = []

    def remove_started() -> None:
        while started:
            docker("rm", "-f", started.pop(), check=False)

    def setup():
        remove_started()  # the previous round's server, outside the timed part
        return (free_port(),), {}

    def deploy(port: int) -> None:
        name = f"smrl-bench-serve-{uuid.uuid4().hex[:8]}"
        started.append(name)
        docker("run", "-d", "--name", name, "--label", LABEL, *(["--gpus", "all"] if variant == "gpu" else []),
               "-p", f"127.0.0.1:{port}:8080", "-v", f"{policy_model_dir}:/opt/ml/model:ro", inference_image, "serve")
        wait_for_ping(port)

    try:
        benchmark.pedantic(deploy, setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        remove_started()
    record("deploy-docker-run", variant, round_times(benchmark), inference_image, envs=0,
           **image_info(inference_image))


def test_deploy_endpoint(benchmark, record, inference_image, policy_archive, sdk_session, variant):
    """`emulator.endpoint(model.tar.gz)` (SDK Model.deploy in local mode) until it yields a ready predictor."""
    try:
        from emulator.endpoints import endpoint
    except ImportError as error:
        pytest.skip(f"emulator.endpoints is not available here ({error})")
    _, archive = policy_archive
    stack = contextlib.ExitStack()
    predictors = []

    def setup():
        stack.close()  # the previous round's endpoint, outside the timed part
        return (), {}

    def deploy() -> None:
        predictors.append(stack.enter_context(
            endpoint(archive, session=sdk_session, port=free_port(),
                     instance_type="local_gpu" if variant == "gpu" else "local")))

    try:
        benchmark.pedantic(deploy, setup=setup, rounds=ENDPOINT_ROUNDS, iterations=1)
        # Ready means answering: one prediction through the last endpoint, outside the timing.
        assert len(predictors[-1].predict([0.0, 0.0, 0.0, 0.0])["predictions"][0]) == 2
    finally:
        stack.close()
    record("deploy-endpoint", variant, round_times(benchmark), inference_image, envs=0, **image_info(inference_image))
