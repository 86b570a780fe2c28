"""Fast path for Coach 1.0.1 on MXNet: the same algorithms, far less overhead per step.

Stock Coach spends most of a CartPole training step (about 4-11 ms here) outside the
maths. Patch 06-fast-path.patch routes these places here (this module holds the switch
and the functions the patches call; each mechanism has its own module):

- networks: Gluon autograd recording (a fixed ~250 us per step on these tiny networks)
  -> the model's own cached graph plus the heads' loss blocks, bound once as MXNet
  executors on the very parameter and gradient arrays Gluon uses (network_graphs,
  executors), without the operators that compute the identity with the presets'
  settings (graph_folding);
- DQN: target pass, prediction pass, Python loop for the TD targets, training pass -> one
  bound graph doing target pass, float64 targets and training pass (dqn_step);
- update: gradients copied out to `accumulated_gradients` and back, a norm computed with
  two MXNet calls per parameter, MXNet's scalar Adam kernel -> the same float32 Adam
  arithmetic in place, one compiled loop per parameter on the trainer's own arrays
  (adam, kernels);
- replay memory: multiprocessing.Manager locks (an IPC round trip per acquire) for a memory
  no other process uses -> in-process locks (locks);
- bookkeeping: a pandas write per step that repeats the value already there -> skipped;
  pandas .loc writes of the logged signals -> .at (in place); shallow copies of every
  sampled batch that DQN never modifies -> skipped; full garbage collections rescanning
  every long-lived object -> gc.freeze() at each training phase;
- engine: MXNet's threaded engine and all-core OpenMP for microsecond operators ->
  NaiveEngine and one OpenMP thread (Coach itself asks for one, too late to take effect).

Unchanged: hyperparameters, losses, the Adam update, target-network copies, exploration,
replay sampling (the same np.random calls in the same order). The same seed gives the same
episodes as stock Coach, and the same weights after every step (bit for bit on the
CartPole presets); tests/fixtures/training_speed/check_fast_path.py checks it. Whatever a
function here does not cover (several devices, distributed training, gradient clipping,
LSTMs, batch norm, other optimisers...) returns None or False and Coach's own code runs.

Switch: SMRL_COACH_FAST=0 (or false/no/off/stock) runs stock Coach throughout; the default
is the fast path. Read once, when this module is first imported (at process start); the
patches and this module ask enabled().

Coach's own modules (rl_coach.utils, rl_coach.logger) import this one while rl_coach is
being imported, and MXNet must not load before configure_engine() has chosen its engine:
mxnet and rl_coach are imported inside the functions that use them.
"""
from __future__ import annotations

import ctypes
import gc
import os
from typing import Any

import numpy as np

import smrl_contract as contract
from smrl_coach import kernels
from smrl_coach.adam import apply_update
from smrl_coach.dqn_step import DQNStep
from smrl_coach.executors import NotCovered
from smrl_coach.locks import LazyManagerLock, LocalReaderWriterLock
from smrl_coach.mxnet_arrays import np_view
from smrl_coach.network_graphs import NetworkGraphs

# What the patches call.
__all__ = [
    "enabled", "describe", "configure_runtime", "freeze_long_lived_objects", "LazyManagerLock",
    "use_local_memory_lock", "predict", "train_step", "set_weights", "dqn_learn_from_batch",
    "skip_batch_filter", "log_target_update", "forget_logged_target_update",
]

# The switch. tests/fixtures/training_speed/check_fast_path.py assigns it to run both
# paths in one process, so it is read through enabled() at each call, never copied.
FAST = contract.fast_path_requested(os.environ.get(contract.FAST_PATH_ENV))


def enabled() -> bool:
    """True when the fast path is on (SMRL_COACH_FAST unset or not 0/false/no/off/stock)."""
    return FAST


def describe() -> str:
    """One line for the job's log: which Coach runs."""
    if enabled():
        return (f"Coach fast path: on (smrl_coach.fast_coach, Adam kernel: {kernels.backend()}; "
                f"{contract.FAST_PATH_ENV}=0 for stock Coach)")
    return f"Coach fast path: off ({contract.FAST_PATH_ENV}={os.environ.get(contract.FAST_PATH_ENV)}): stock Coach"


# -- MXNet engine settings ----------------------------------------------------------------

def configure_engine() -> None:
    """MXNet engine settings that suit tiny networks; must run before MXNet's first operator.

    NaiveEngine runs each operator synchronously on the calling thread: for a 256x512
    network on a batch of 32 the threaded engine's hand-off to worker threads costs more
    than the operators themselves. A value the user set is never overridden, and the GPU
    image keeps MXNet's default engine (the fast path covers CPU networks only).
    """
    if enabled() and os.environ.get("SMRL_IMAGE_VARIANT", "cpu") != "gpu":
        os.environ.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")


_runtime_configured = False


def configure_runtime() -> None:
    """Called when the first network is built (MxnetArchitecture.__init__).

    - One OpenMP thread for MXNet's operators (SMRL_COACH_OMP_THREADS overrides). Coach
      means to do this (it sets OMP_NUM_THREADS=1 for its runs) but sets the variable after
      MXNet's OpenMP runtime has read it, so stock Coach runs its tiny operators on every
      core; with other work on the machine the OpenMP threads' spin-waits cost more than
      the operators. Set on this thread: the NaiveEngine runs operators on the caller's.
    - Loads the compiled kernels (smrl_coach.kernels: ~0.25 s, numba's import and its
      cache) now rather than in the first training step.
    """
    global _runtime_configured
    if not enabled() or _runtime_configured:
        return
    _runtime_configured = True
    import mxnet as mx
    threads = int(os.environ.get("SMRL_COACH_OMP_THREADS", "1"))
    if threads > 0:
        mx.base.check_call(mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(threads)))
    kernels.backend()


configure_engine()


# -- garbage collection -----------------------------------------------------------------

def freeze_long_lived_objects() -> None:
    """gc.freeze() at the start of each training phase (GraphManager.train_and_act).

    What exists then (modules, Coach's graph, networks, the replay memory so far) lives
    for the whole run, yet every full collection rescans it: ~64 ms per collection for
    the ~230k objects of the CartPole DQN run, ~8% of its training time. Frozen objects
    are still freed by reference counting; only the cycle collector skips them.
    """
    if enabled():
        gc.freeze()


# -- replay-memory lock -----------------------------------------------------------------

def use_local_memory_lock(memory: Any) -> None:
    """Gives a memory that is not shared between processes an in-process lock."""
    if memory is not None and hasattr(memory, "reader_writer_lock"):
        memory.reader_writer_lock = LocalReaderWriterLock()


# -- networks: predictions and training steps through bound executors --------------------

_BIND_AFTER = 2        # a shape is bound the second time it is seen (one-off shapes stay in Gluon)


def graphs(arch: Any) -> NetworkGraphs | None:
    """The executor cache of a network, or None when the fast path does not cover it."""
    if not enabled():
        return None
    g = arch.__dict__.get("_smrl_graphs")
    if g is None:
        if arch.__dict__.get("_smrl_not_covered") or len(arch._devices) != 1 \
                or arch._devices[0].device_type != "cpu" \
                or arch.middleware.__class__.__name__ == "LSTMMiddleware" or not arch.model._cached_graph:
            return None
        try:
            g = NetworkGraphs(arch, bind_after=_BIND_AFTER)
        except NotCovered:
            arch.__dict__["_smrl_not_covered"] = True
            return None
        arch.__dict__["_smrl_graphs"] = g
    g.check()
    return g


def predict(arch: Any, inputs: dict[str, np.ndarray]) -> list | None:
    """The forward pass of MxnetArchitecture.predict as numpy outputs, or None (run Coach's)."""
    g = graphs(arch)
    return None if g is None else g.predict(inputs)


def can_train_fast(arch: Any) -> bool:
    """The cases the fast training step covers; anything else runs Coach's own code."""
    return (
        enabled()
        and arch.trainer is not None
        and len(arch._devices) == 1
        and arch._devices[0].device_type == "cpu"
        and not arch.distributed_training
        and arch.global_network is None
        and not arch.network_parameters.clip_gradients
        and arch.optimizer_type != "LBFGS"
    )


def train_step(arch: Any, inputs: dict[str, np.ndarray], targets: Any, additional_fetches: Any = None):
    """accumulate_gradients(no_accumulation=True) + apply_gradients of NetworkWrapper's
    train_and_sync_networks, or None when not covered (the caller runs Coach's code).

    The same forward pass, losses, backward pass and Adam update as Coach; skipped are
    Gluon's autograd recording, the copies of every gradient into `accumulated_gradients`
    and back into the parameters' gradient buffers (identical values) and the
    per-parameter norm calls. Returns what accumulate_gradients returns:
    (total_loss, [losses], unclipped gradient norm, [fetched]).
    (importance_weights is not passed: Coach's MXNet backend ignores it too.)
    """
    if not can_train_fast(arch):
        return None
    g = graphs(arch)
    if g is None:
        return None
    fetches = tuple(tuple(f) for f in (additional_fetches or []))
    targets = targets if isinstance(targets, list) else [targets]
    try:
        result = g.train(inputs, targets, fetches)
    except NotCovered:
        arch.__dict__["_smrl_not_covered"] = True
        arch.__dict__.pop("_smrl_graphs", None)
        return None
    if result is None:
        return None
    total, losses, fetched = result
    norm = apply_update(arch, fresh=False)
    return total, losses, norm, fetched


def set_weights(arch: Any, weights: Any, new_rate: float) -> bool:
    """MxnetArchitecture.set_weights for a plain copy (new_rate 1, the target-network update
    of DQN and PPO), or False when not covered (Coach's code runs).

    Coach computes new_rate * new + (1 - new_rate) * old with two _mul_scalar and one add
    per parameter and writes the result with Gluon's set_data: ~3 ms for the DQN network,
    every 100 steps. Done here on numpy views of the same arrays with the same float32
    operations (new * 1.0f, old * 0.0f, their sum), so the bits are the same, ~1% of the time.
    """
    if not enabled() or new_rate != 1.0:
        return False
    old_params = arch.model.collect_params()
    pairs = []
    for name, new in weights.items():
        old = old_params[old_params.prefix + name[len(weights.prefix):]]
        trainer = old._trainer() if old._trainer else None
        for p in (new, old):
            if p._data is None or len(p._data) != 1 or p._stype != "default" \
                    or p._data[0].dtype != np.float32 or p._data[0].context.device_type != "cpu":
                return False
        if new._data[0].shape != old._data[0].shape or (trainer is not None and trainer._update_on_kvstore):
            return False
        pairs.append((new._data[0], old._data[0]))
    import mxnet as mx
    mx.nd.waitall()
    rate, keep = np.float32(new_rate), np.float32(1 - new_rate)
    for new, old in pairs:
        target = np_view(old)
        target *= keep                  # (1 - rate) * old
        target += np_view(new) * rate   # rate * new + that (float addition commutes)
    return True


# -- DQN --------------------------------------------------------------------------------

def dqn_learn_from_batch(agent: Any, batch: Any):
    """DQNAgent.learn_from_batch for a plain DQN (no prioritised replay), through
    smrl_coach.dqn_step. Returns None when not covered, so the caller runs Coach's code."""
    from rl_coach.memories.non_episodic.prioritized_experience_replay import PrioritizedExperienceReplay

    step = agent.__dict__.get("_smrl_dqn_step")
    if step is None:
        if agent.__dict__.get("_smrl_dqn_not_covered"):
            return None
        wrapper = agent.networks["main"]
        online, target = wrapper.online_network, wrapper.target_network
        try:
            if target is None or isinstance(agent.memory, PrioritizedExperienceReplay) \
                    or not can_train_fast(online) or wrapper.global_network is not None:
                raise NotCovered("agent")
            g_online, g_target = graphs(online), graphs(target)
            if g_online is None or g_target is None:
                raise NotCovered("networks")
            step = agent.__dict__["_smrl_dqn_step"] = DQNStep(g_online, g_target)
        except NotCovered:
            agent.__dict__["_smrl_dqn_not_covered"] = True
            return None
    step.online.check()
    step.target.check()
    return step.run(agent, batch)


# -- per-step bookkeeping of Agent.train ------------------------------------------------

_READ_ONLY_BATCH_AGENTS = ("DQNAgent",)


def skip_batch_filter(agent: Any) -> bool:
    """True when Agent.train's pre-network filter would only make shallow copies of the batch.

    With no observation or reward filter, InputFilter.filter(batch, deep_copy=False) returns
    copies of the 32 sampled transitions, whose only purpose is to keep the replay memory
    safe from an agent that changes its batch. DQN's learn_from_batch only reads it.
    """
    if not enabled() or type(agent).__name__ not in _READ_ONLY_BATCH_AGENTS:
        return False
    f = agent.pre_network_filter
    reward_filters = getattr(f, "_reward_filters", None)
    observation_filters = getattr(f, "_observation_filters", None)
    if reward_filters is None or observation_filters is None:
        return False
    return not reward_filters and all(len(filters) == 0 for filters in observation_filters.values())


def log_target_update(agent: Any, value: int, overwrite: bool = True) -> None:
    """Agent.train's per-step write of the 'Update Target Network' signal (a pandas .loc write).

    Coach writes it on every training step, to the logger's current row. (Its
    overwrite=False is a no-op: Logger.signal_value_exists is called with its arguments
    swapped and never finds the value, so every write lands.) The fast path skips a write
    that would put the value the cell already holds; the frame is the same after every step.
    """
    logger = agent.agent_logger
    if not enabled():
        logger.create_signal_value("Update Target Network", value, overwrite=overwrite)
        return
    key = (logger.time, value, id(logger.data))
    if agent.__dict__.get("_smrl_logged_target_update") == key:
        return
    logger.create_signal_value("Update Target Network", value, overwrite=overwrite)
    agent.__dict__["_smrl_logged_target_update"] = key


def forget_logged_target_update(agent: Any) -> None:
    """update_log rewrites the signal: the next training step writes it again."""
    agent.__dict__.pop("_smrl_logged_target_update", None)
