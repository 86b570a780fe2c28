"""CartPole rollout throughput inside the training image: env steps per second.

    python rollout.py --envs N [--policy model.tar.gz] [--seconds S] [--ctx cpu|gpu]

Without --policy, actions come from a pre-drawn random table: the environment alone,
the ceiling for any policy. With --policy, the exported network (MXNet symbol + params
from a training job's model.tar.gz, loaded with smrl_coach.model_export.load_mxnet,
hybridised as the serving image does) picks the greedy action: one forward pass per
step for one env, one batched pass per vector step for N envs.

One env is `gymnasium.make("CartPole-v0")` (the preset's level, with gymnasium's
default wrappers). N envs is gymnasium's own numpy-vectorised CartPole
(`make_vec(..., vectorization_mode="vector_entry_point")`, autoreset inside), so N envs
cost one numpy step, not N Python steps.
"""
from __future__ import annotations

import argparse
import tarfile
import tempfile
from pathlib import Path

import gymnasium
import numpy as np
from common import context, emit, environment_info, timed_loop

ENV_ID = "CartPole-v0"


def load_policy(archive: Path, ctx_name: str):
    """The network from a model.tar.gz, as a function observations (B, 4) -> actions (B,)."""
    import mxnet as mx

    from smrl_coach.model_export import load_mxnet

    model_dir = Path(tempfile.mkdtemp(prefix="policy-"))
    with tarfile.open(archive) as tar:
        tar.extractall(model_dir)
    ctx = context(ctx_name)
    net = load_mxnet(model_dir)
    net.collect_params().reset_ctx(ctx)
    net.hybridize(static_alloc=True)

    def act(observations: np.ndarray) -> np.ndarray:
        q = net(mx.nd.array(observations, ctx=ctx))
        if isinstance(q, list | tuple):
            q = q[0]
        return q.asnumpy().argmax(axis=1)

    return act


def single_env_step(policy, rng: np.random.Generator):
    env = gymnasium.make(ENV_ID)
    state = {"obs": env.reset(seed=0)[0]}
    random_actions = rng.integers(0, 2, size=4096)
    counter = [0]

    def step() -> None:
        if policy is None:
            counter[0] += 1
            action = int(random_actions[counter[0] & 4095])
        else:
            action = int(policy(state["obs"][None, :])[0])
        obs, _, terminated, truncated, _ = env.step(action)
        state["obs"] = env.reset()[0] if terminated or truncated else obs

    return step


def vector_env_step(envs: int, policy, rng: np.random.Generator):
    env = gymnasium.make_vec(ENV_ID, num_envs=envs, vectorization_mode="vector_entry_point")
    state = {"obs": env.reset(seed=0)[0]}
    random_actions = rng.integers(0, 2, size=(256, envs))
    counter = [0]

    def step() -> None:
        if policy is None:
            counter[0] += 1
            actions = random_actions[counter[0] & 255]
        else:
            actions = policy(state["obs"])
        state["obs"] = env.step(actions)[0]

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", type=int, default=1)
    parser.add_argument("--policy", type=Path, default=None, help="a model.tar.gz from training")
    parser.add_argument("--seconds", type=float, default=2.0, help="measured time, after warm-up")
    parser.add_argument("--warmup", type=float, default=0.3)
    parser.add_argument("--ctx", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    policy = load_policy(args.policy, args.ctx) if args.policy else None
    step = single_env_step(policy, rng) if args.envs == 1 else vector_env_step(args.envs, policy, rng)
    # Fewer calls per clock check where one call is already long (a policy forward pass).
    calls, elapsed = timed_loop(step, args.seconds, args.warmup, chunk=64 if policy is None else 16)
    emit({
        **environment_info(),
        "env": ENV_ID,
        "envs": args.envs,
        "vectorisation": "single gymnasium.make" if args.envs == 1 else "gymnasium vector_entry_point (numpy-batched)",
        "policy": "exported MXNet policy, greedy" if policy else "none (random actions)",
        "ctx": args.ctx,
        "env_steps": calls * args.envs,
        "seconds": elapsed,
        "env_steps_per_s": calls * args.envs / elapsed,
        "inferences_per_s": calls / elapsed if policy else 0.0,
    })


if __name__ == "__main__":
    main()
