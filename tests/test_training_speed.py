"""Issue 6: Coach + MXNet in the training image is fast, and learns exactly as stock Coach.

The image runs rl-coach 1.0.1 with patch 06 and smrl_coach.fast_coach (the fast path,
default) or, with SMRL_COACH_FAST=0, stock Coach. These tests run inside the real image:

- the numerical check (fixtures/training_speed/check_fast_path.py): from the same
  weights, optimiser state and batch, stock and fast training steps of the DQN and
  clipped-PPO presets give the same loss, fetched values and updated weights within
  float32 tolerance (they are in fact bit-identical, bar the logged gradient norm);
- the same seeded run in both modes gives the same episodes (identical trajectories), and
  the fast one is faster (by how much: benchmarks/test_training.py);
- the DQN preset trained as a job (`train`, seed 0) reaches evaluation reward 150 within
  its default budget.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from emulator.images import build_image, training_image

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "training_speed"
PRESETS = REPO / "presets"


@pytest.fixture(scope="module")
def image(docker_engine):
    build_image("training", "cpu", log=lambda line: None)
    return training_image("cpu")


def _run(client, image: str, command: list[str], environment: dict | None = None,
         volumes: dict | None = None) -> str:
    """Runs a command in the training image (no network) and returns its stdout."""
    mounts = {str(FIXTURES): {"bind": "/check", "mode": "ro"}, str(PRESETS): {"bind": "/opt/ml/code", "mode": "ro"}}
    mounts.update(volumes or {})
    output = client.containers.run(image, command, environment=environment or {}, volumes=mounts,
                                   network_disabled=True, remove=True, stdout=True, stderr=False)
    return output.decode()


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_fast_path_matches_stock_coach_step_for_step(docker_engine, image):
    output = _run(docker_engine, image, ["python3", "/check/check_fast_path.py"])
    checks = _json_lines(output)
    failed = [c for c in checks if not c["ok"]]
    assert checks and not failed, f"checks that differ beyond float32 tolerance: {failed}"
    names = {c["check"] for c in checks}
    assert any(n.startswith("dqn step") for n in names) and any(n.startswith("ppo step") for n in names)
    assert "SUMMARY" in output


def _bench(client, image: str, mode: str, preset: str, steps: int) -> dict:
    output = _run(client, image, ["python3", "/check/bench.py", preset, "0", str(steps)],
                  environment={"SMRL_COACH_FAST": mode})
    (result,) = _json_lines(output)
    return result


@pytest.mark.parametrize("preset,steps", [("preset-cartpole-dqn", 1500), ("preset-cartpole-clippedppo", 4096)])
def test_fast_path_trains_identically_to_stock_coach(docker_engine, image, preset, steps):
    # How much faster it is lives in benchmarks/test_training.py, side by side in one run.
    stock = _bench(docker_engine, image, "0", preset, steps)
    fast = _bench(docker_engine, image, "1", preset, steps)
    assert (stock["mode"], fast["mode"]) == ("stock", "fast")
    assert fast["episodes"] == stock["episodes"] and fast["rewards_sha"] == stock["rewards_sha"], (stock, fast)
    assert fast["grad_steps"] == stock["grad_steps"] > 0


def test_fast_dqn_job_reaches_reward_150_within_its_default_budget(docker_engine, image, tmp_path):
    job = tmp_path / "ml"
    config = job / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({
        "sagemaker_program": json.dumps("train_coach.py"),
        "sagemaker_submit_directory": json.dumps("/opt/ml/code"),
        "RLCOACH_PRESET": json.dumps("preset-cartpole-dqn"),
        "seed": "0",
    }))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    (config / "inputdataconfig.json").write_text("{}")
    try:
        output = _run(docker_engine, image, ["train"], volumes={str(job): {"bind": "/opt/ml", "mode": "rw"}})
    finally:
        # files written by the container belong to root; leave nothing behind in tmp
        shutil.rmtree(job / "output", ignore_errors=True)
    evaluations = [float(line.split("Total reward=")[1].split(",")[0])
                   for line in output.splitlines() if line.startswith("Testing>") and "Total reward=" in line]
    assert evaluations, output[-2000:]
    assert max(evaluations) >= 150, f"evaluation rewards: {evaluations}"
