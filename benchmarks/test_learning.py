"""Learning with the fast path is learning with stock Coach: the DQN preset over 5 seeds.

Each seed runs the CartPole DQN preset's whole schedule (1,000 heat-up steps, 10,000
training steps, an evaluation episode every 10 episodes) in the warm training container,
with the image's fast path and with stock Coach (SMRL_COACH_FAST=0). The figure is the
number of env steps (heat-up included) before the first evaluation episode that reaches
reward 150, the preset's "solved"; the report shows the median over the seeds and each
run's curve is in extra_info. The fast path does the same arithmetic in the same order,
so the same seed gives the same evaluations in both modes: that is asserted, seed by seed.
"""
from __future__ import annotations

import pytest

SEEDS = (0, 1, 2, 3, 4)
SOLVED = 150.0


def first_solved(evaluations: list[dict]) -> int | None:
    """Env steps of the first evaluation at or above SOLVED, or None."""
    return next((e["env_steps"] for e in evaluations if e["reward"] >= SOLVED), None)


@pytest.fixture(scope="module")
def curves() -> dict[str, dict[int, dict]]:
    """Each mode's run per seed, filled by the benchmarks below (fast first, then stock)."""
    return {}


@pytest.mark.parametrize("coach", ["fast", "stock"])
def test_dqn_learning_over_seeds(benchmark, record, warm_training, variant, coach, curves):
    runs: dict[int, dict] = {}

    def all_seeds() -> None:
        for seed in SEEDS:
            runs[seed] = warm_training.run_script(
                "coach_train.py", "--presets", "/opt/presets", "--seed", str(seed),
                environment={"SMRL_COACH_FAST": "1" if coach == "fast" else "0"}, timeout=900)

    benchmark.pedantic(all_seeds, rounds=1, iterations=1)
    solved = {seed: first_solved(run["evaluations"]) for seed, run in runs.items()}
    assert all(steps is not None for steps in solved.values()), f"{coach}: seeds that never reached {SOLVED}: {solved}"
    curves[coach] = runs
    suffix = "" if coach == "fast" else "-stock"
    info = dict(coach=coach, seeds=list(SEEDS), envs=1, mxnet_version=runs[0]["mxnet_version"],
                threads=runs[0]["threads"], solved_env_steps=[solved[s] for s in SEEDS],
                train_seconds=[runs[s]["train_seconds"] for s in SEEDS],
                evaluations={s: [(e["env_steps"], e["reward"]) for e in runs[s]["evaluations"]] for s in SEEDS})
    record(f"dqn-solved-steps{suffix}", variant, [solved[s] for s in SEEDS], warm_training.image, **info)
    record(f"dqn-train-seconds{suffix}", variant, [runs[s]["train_seconds"] for s in SEEDS], warm_training.image,
           **info)
    if coach == "stock" and "fast" in curves:
        for seed in SEEDS:
            assert curves["fast"][seed]["evaluations"] == runs[seed]["evaluations"], f"seed {seed} learned differently"
