"""Rollout throughput in the training image: CartPole env steps/s, with and without the policy.

Per-step figures: measured inside the warm container (benchmarks/inside/rollout.py),
so container start-up and imports are not in them. pytest-benchmark times each
`docker exec` round; the figure is the in-container rate, recorded in extra_info.
"""
from __future__ import annotations

import pytest

ROUNDS = 3
SECONDS_PER_ROUND = 2.0


def _rollout(benchmark, record, container, variant, figure, envs, policy=None):
    results = []

    def once() -> None:
        args = ["--envs", str(envs), "--seconds", str(SECONDS_PER_ROUND), "--ctx", variant]
        results.append(container.run_script("rollout.py", *args, *(["--policy", policy] if policy else [])))

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    last = results[-1]
    record(figure, variant, [r["env_steps_per_s"] for r in results], container.image,
           mxnet_version=last["mxnet_version"], threads=last["threads"], envs=envs,
           vectorisation=last["vectorisation"], policy=last["policy"],
           inferences_per_s=[r["inferences_per_s"] for r in results])


@pytest.mark.parametrize("envs", [1, 8, 64])
def test_raw_env(benchmark, record, warm_training, variant, envs):
    """The ceiling: CartPole stepped with random actions, no policy."""
    _rollout(benchmark, record, warm_training, variant, f"rollout-raw-{envs}", envs)


@pytest.mark.parametrize("envs", [1, 8, 64])
def test_policy(benchmark, record, warm_training, policy_archive, variant, envs):
    """The exported policy acting greedily: one (batched) forward pass per (vector) step."""
    inside, _ = policy_archive
    _rollout(benchmark, record, warm_training, variant, f"rollout-policy-{envs}", envs, policy=inside)
