"""Public SageMaker RL code runs here as published: the CartPole Coach example, end to end.

The cases live in `../shared/conformance/` (byte for byte from aws/amazon-sagemaker-examples
at commit d015633931ffa0ff5ae782c44be9781b6b25408b; see that folder's README), or wherever
`SMRL_CONFORMANCE_DIR` points. Each test copies a case to a temp dir and runs the notebook's
own code cells (training, evaluation, deploy, predict, delete) with exactly two edits:

1. `sagemaker_session=local_session()` added to each estimator;
2. `file://` paths where the notebook has S3 ones (output path, checkpoint path).

The notebook's S3 cells (`wait_for_s3_object` on boto3) are left to zero-edit runs; here the
test reads the same files from the `file://` output path. Where the folder is absent the
tests skip, except under CI=true, where its absence fails.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tarfile
import time
from pathlib import Path

import pytest

from conftest import _in_ci, job_container_count
from emulator.metrics import parse_metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE_DIR = Path(os.environ.get("SMRL_CONFORMANCE_DIR") or REPO.parent / "shared" / "conformance")
EXAMPLES = CONFORMANCE_DIR / "amazon-sagemaker-examples" / "reinforcement_learning"
CARTPOLE = EXAMPLES / "rl_cartpole_coach"
NOTEBOOK = CARTPOLE / "rl_cartpole_coach_gymEnv.ipynb"
SESSION_EDIT = ("RLEstimator(", "RLEstimator(\n    sagemaker_session=local_session(),")


def _require_cases() -> None:
    if NOTEBOOK.is_file():
        return
    reason = (f"No conformance cases at {CONFORMANCE_DIR} (set SMRL_CONFORMANCE_DIR, or get them from "
              "aws/amazon-sagemaker-examples at commit d015633931ffa0ff5ae782c44be9781b6b25408b).")
    if _in_ci():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def notebook_cell(marker: str) -> str:
    """The source of the notebook's one code cell that contains `marker`."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    found = [source for source in sources if marker in source]
    assert len(found) == 1, f"{len(found)} code cells of {NOTEBOOK.name} contain {marker!r}"
    return found[0]


def with_local_session(source: str) -> str:
    """Edit 1: the estimator gets the emulator's session."""
    assert SESSION_EDIT[0] in source
    return source.replace(*SESSION_EDIT)


def copy_case(tmp_path: Path) -> Path:
    """The example and its `common` folder (the example's `common` is a symlink to it)."""
    root = tmp_path / "reinforcement_learning"
    for name in ("rl_cartpole_coach", "common"):
        shutil.copytree(EXAMPLES / name, root / name, symlinks=True, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)  # the cases are kept read-only
    return root / "rl_cartpole_coach"


def notebook_namespace(output: Path) -> dict:
    """What the notebook's earlier cells define, with local mode on and file:// paths (edit 2)."""
    import numpy as np
    import sagemaker
    from sagemaker.rl import RLEstimator, RLFramework, RLToolkit

    from emulator import local_session

    return {
        "np": np, "os": os, "sagemaker": sagemaker, "local_session": local_session,
        "RLEstimator": RLEstimator, "RLToolkit": RLToolkit, "RLFramework": RLFramework,
        "local_mode": True, "instance_type": "local", "role": "SageMakerRole",
        "job_name_prefix": "rl-cart-pole", "s3_output_path": output.as_uri() + "/",
    }


def run_cell(source: str, namespace: dict) -> None:
    exec(compile(source, "<notebook cell>", "exec"), namespace)


def _files(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.rglob(pattern))


@pytest.fixture
def in_case(tmp_path, monkeypatch, docker_engine, training_image_ready, inference_image_ready):
    _require_cases()
    case = copy_case(tmp_path)
    monkeypatch.chdir(case)
    monkeypatch.setenv("SMRL_WORK_DIR", str(tmp_path / "work"))
    return case


@pytest.mark.parametrize("preset", ["preset-cartpole-clippedppo", "preset-cartpole-dqn"])
def test_cartpole_notebook_trains_evaluates_and_serves_unchanged(in_case, tmp_path, docker_engine, capfd, preset):
    before = job_container_count(docker_engine)
    output = tmp_path / "output"
    namespace = notebook_namespace(output)
    edits = ("preset-cartpole-clippedppo", preset)  # the DQN case: the example's other preset

    # Training: the notebook's estimator, fit() with its hyperparameters.
    started = time.monotonic()
    run_cell(with_local_session(notebook_cell("estimator.fit(")).replace(*edits), namespace)
    train_seconds = time.monotonic() - started
    estimator = namespace["estimator"]
    job_dir = output / estimator._current_job_name
    with tarfile.open(job_dir / "model.tar.gz") as tar:
        assert "model.onnx" in {Path(m.name).name for m in tar.getmembers()}
    assert (job_dir / "output.tar.gz").is_file()
    gifs = _files(output, "*.gif")
    assert gifs, f"dump_gifs is on in {preset}, and no gif landed under {output}"
    # The SDK streams the job's log to stdout; its own Coach metric definitions read it.
    evaluations = parse_metrics(capfd.readouterr().out)["reward-testing"]
    assert evaluations, "no evaluation reward in the job's log"

    # Evaluation: the notebook's evaluation job, restoring the checkpoint of training.
    extracted = tmp_path / "extracted"
    with tarfile.open(job_dir / "output.tar.gz") as tar:
        tar.extractall(extracted, filter="data")
    namespace["checkpoint_path"] = (extracted / "data" / "checkpoint").as_uri()
    assert _files(extracted / "data" / "checkpoint", "*.params"), "no checkpoint in output.tar.gz"
    run_cell(with_local_session(notebook_cell("estimator_eval.fit(")).replace(*edits), namespace)

    # Serving: deploy-mxnet-coach.py, the notebook's predictions, then delete.
    run_cell(notebook_cell("predictor = estimator.deploy("), namespace)
    predictor = namespace["predictor"]
    try:
        answers = [predictor.predict(np_obs) for np_obs in _observations(namespace)]
        latencies = _latencies(predictor, namespace, count=200)
        if preset == "preset-cartpole-clippedppo":
            for source in (notebook_cell("[0.0, 0.0, 2.0, 2.0]"), notebook_cell("[0.0, 0.0, -2.0, -2.0]")):
                run_cell(source, namespace)
                value, action = namespace["value"], namespace["action"]
                assert len(value[0]) == 1 and len(action[0]) == 2
                assert abs(sum(action[0]) - 1) < 1e-5, f"action probabilities {action}"
        else:
            for (q_values,) in answers:
                assert len(q_values[0]) == 2
    finally:
        run_cell(notebook_cell("predictor.delete_endpoint()"), namespace)

    assert job_container_count(docker_engine) == before, "a job or the endpoint left a container behind"
    print(f"\n{preset}: training {train_seconds:.1f} s, evaluations {evaluations}, "
          f"{len(gifs)} gifs, predictions {answers}, 200 predictions p50 "
          f"{statistics.median(latencies) * 1e3:.2f} ms p99 {_p99(latencies) * 1e3:.2f} ms")


def _observations(namespace) -> list:
    np = namespace["np"]
    return [np.array([0.0, 0.0, 2.0, 2.0]), np.array([0.0, 0.0, -2.0, -2.0])]


def _latencies(predictor, namespace, count: int) -> list[float]:
    observation = namespace["np"].array([0.01, -0.02, 0.03, 0.04])
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        predictor.predict(observation)
        latencies.append(time.perf_counter() - started)
    return latencies


def _p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * (len(values) - 1))]
