"""The floor under Coach's DQN step: the same training step in bare MXNet Gluon.

    python gluon_dqn.py --mode imperative|hybridised [--seconds S] [--ctx cpu|gpu]

The network is what Coach builds for the CartPole DQN preset (DQNNetworkParameters):
the observation embedder (EmbedderScheme.Medium: Dense(256) + relu), the FC middleware
(MiddlewareScheme.Medium: Dense(512) + relu) and the Q head (Dense(actions)), trained
with an L2 loss (the preset turns Huber off) and Adam (Coach's defaults: lr 0.00025 from
the preset, epsilon 1e-4, beta2 0.99), batch 32.

One step does what DQNAgent.learn_from_batch asks of MXNet: target-network forward on
the next states and online forward on the states (both fetched as numpy, as Coach does),
TD targets in numpy, then forward + backward + Adam update; the target network is synced
every 100 steps. What Coach adds on top of this is its own overhead.
"""
from __future__ import annotations

import argparse

import mxnet as mx
import numpy as np
from common import context, emit, environment_info, timed_loop
from mxnet import autograd, gluon, nd

OBSERVATION_SIZE, ACTIONS, BATCH, DISCOUNT = 4, 2, 32, 0.99
TARGET_SYNC_STEPS = 100
REPLAY_SIZE = 10_000


def q_network(ctx) -> gluon.HybridBlock:
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(256, activation="relu"),   # input embedder, EmbedderScheme.Medium
            gluon.nn.Dense(512, activation="relu"),   # FC middleware, MiddlewareScheme.Medium
            gluon.nn.Dense(ACTIONS))                  # Q head
    net.initialize(mx.init.Xavier(), ctx=ctx)
    net(nd.zeros((BATCH, OBSERVATION_SIZE), ctx=ctx))  # materialise the deferred shapes
    return net


def copy_weights(source: gluon.Block, target: gluon.Block) -> None:
    for src, dst in zip(source.collect_params().values(), target.collect_params().values()):
        dst.set_data(src.data())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["imperative", "hybridised"], required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--ctx", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()

    ctx = context(args.ctx)
    online, target = q_network(ctx), q_network(ctx)
    copy_weights(online, target)
    if args.mode == "hybridised":
        online.hybridize(static_alloc=True, static_shape=True)
        target.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(online.collect_params(), "adam",
                            {"learning_rate": 0.00025, "epsilon": 1e-4, "beta1": 0.9, "beta2": 0.99})
    l2 = gluon.loss.L2Loss()

    # A replay memory of random transitions; each step samples a batch from it, as Coach does.
    rng = np.random.default_rng(0)
    states = rng.normal(size=(REPLAY_SIZE, OBSERVATION_SIZE)).astype(np.float32)
    next_states = rng.normal(size=(REPLAY_SIZE, OBSERVATION_SIZE)).astype(np.float32)
    actions = rng.integers(0, ACTIONS, size=REPLAY_SIZE)
    rewards = np.ones(REPLAY_SIZE, dtype=np.float32)
    game_overs = (rng.random(REPLAY_SIZE) < 0.05).astype(np.float32)
    rows = np.arange(BATCH)
    steps = [0]

    def train_step() -> None:
        batch = rng.integers(0, REPLAY_SIZE, size=BATCH)
        x = nd.array(states[batch], ctx=ctx)
        q_next = target(nd.array(next_states[batch], ctx=ctx)).asnumpy()
        td_targets = online(x).asnumpy()
        td_targets[rows, actions[batch]] = rewards[batch] + (1.0 - game_overs[batch]) * DISCOUNT * q_next.max(axis=1)
        y = nd.array(td_targets, ctx=ctx)
        with autograd.record():
            loss = l2(online(x), y).mean()
        loss.backward()
        trainer.step(BATCH)
        steps[0] += 1
        if steps[0] % TARGET_SYNC_STEPS == 0:
            copy_weights(online, target)

    calls, elapsed = timed_loop(train_step, args.seconds, args.warmup, chunk=10, finish=nd.waitall)
    emit({
        **environment_info(),
        "mode": args.mode,
        "ctx": args.ctx,
        "network": "Dense(256) relu -> Dense(512) relu -> Dense(2), L2 loss, Adam",
        "batch": BATCH,
        "gradient_steps": calls,
        "seconds": elapsed,
        "gradient_steps_per_s": calls / elapsed,
        "ms_per_step": 1000.0 * elapsed / calls,
    })


if __name__ == "__main__":
    main()
