"""Training throughput in the training image: Coach's DQN and clipped-PPO presets, and bare MXNet.

Coach runs twice per preset and variant: the image's default fast path and stock Coach
(SMRL_COACH_FAST=0), side by side in the same session, so their ratio is meaningful.

Coach runs the repository's preset through the image's launcher with a fixed budget
(benchmarks/inside/coach_train.py); its rates are timed inside Coach's train phase, after
heat-up. The reference is the same DQN network's training step written plainly in Gluon
(benchmarks/inside/gluon_dqn.py), imperative and hybridised.
"""
from __future__ import annotations

import pytest

COACH_ROUNDS = 2
# Training-phase env steps per Coach round (one gradient step each), after the preset's 1,000 heat-up steps.
COACH_STEPS = 2000
# Clipped PPO (no heat-up): two of its 2,048-step collect-then-train phases per round.
PPO_STEPS = 4096
GLUON_ROUNDS = 3
GLUON_SECONDS = 3.0


def _coach_rounds(benchmark, warm_training, coach: str, *args: str) -> list[dict]:
    results = []

    def once() -> None:
        results.append(warm_training.run_script("coach_train.py", "--presets", "/opt/presets", *args,
                                                environment={"SMRL_COACH_FAST": "1" if coach == "fast" else "0"}))

    benchmark.pedantic(once, rounds=COACH_ROUNDS, iterations=1)
    return results


def _record_rates(record, warm_training, variant: str, coach: str, prefix: str, results: list[dict]) -> dict:
    """Records `<prefix>-gradient` and `<prefix>-env` (with `-stock` for stock Coach) from the same runs."""
    last = results[-1]
    common = dict(coach=coach, mxnet_version=last["mxnet_version"], threads=last["threads"], envs=1,
                  preset=last["preset"], omp_num_threads_after_launch=last["omp_num_threads_after_launch"],
                  ms_per_gradient_step=[r["ms_per_gradient_step"] for r in results],
                  train_env_steps=[r["train_env_steps"] for r in results])
    suffix = "" if coach == "fast" else "-stock"
    for kind, key in (("gradient", "gradient_steps_per_s"), ("env", "train_env_steps_per_s")):
        record(f"{prefix}-{kind}{suffix}", variant, [r[key] for r in results], warm_training.image, **common)
    return common


@pytest.mark.parametrize("coach", ["fast", "stock"])
def test_coach_dqn(benchmark, record, warm_training, variant, coach):
    """The image's Coach (fast path, the default) and stock Coach (SMRL_COACH_FAST=0), same run."""
    results = _coach_rounds(benchmark, warm_training, coach, "--steps", str(COACH_STEPS))
    for result in results:
        # The preset trains once per env step (num_consecutive_playing_steps=1): a mismatch means
        # the timing window caught something other than Coach's train phase.
        assert abs(result["gradient_steps"] - result["train_env_steps"]) <= 0.02 * result["train_env_steps"], result
    # One benchmark, three figures: they come from the same Coach runs.
    common = _record_rates(record, warm_training, variant, coach, "coach", results)
    if coach == "fast":
        record("coach-heatup", variant, [r["heatup_env_steps_per_s"] for r in results], warm_training.image, **common)


@pytest.mark.parametrize("coach", ["fast", "stock"])
def test_coach_clipped_ppo(benchmark, record, warm_training, variant, coach):
    """The clipped-PPO preset, fast path and stock Coach, same run."""
    results = _coach_rounds(benchmark, warm_training, coach, "--preset", "preset-cartpole-clippedppo",
                            "--steps", str(PPO_STEPS), "--heatup", "0")
    for result in results:
        assert result["gradient_steps"] > 0 and result["train_env_steps"] >= PPO_STEPS, result
    _record_rates(record, warm_training, variant, coach, "coach-ppo", results)


@pytest.mark.parametrize("mode", ["imperative", "hybridised"])
def test_gluon_dqn_step(benchmark, record, warm_training, variant, mode):
    results = []

    def once() -> None:
        results.append(warm_training.run_script("gluon_dqn.py", "--mode", mode, "--seconds", str(GLUON_SECONDS),
                                                "--ctx", variant))

    benchmark.pedantic(once, rounds=GLUON_ROUNDS, iterations=1)
    last = results[-1]
    record(f"gluon-{mode}", variant, [r["gradient_steps_per_s"] for r in results], warm_training.image,
           mxnet_version=last["mxnet_version"], threads=last["threads"], envs=1, batch=last["batch"],
           network=last["network"], ms_per_step=[r["ms_per_step"] for r in results])
