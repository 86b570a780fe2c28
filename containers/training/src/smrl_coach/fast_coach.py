"""Fast path for Coach 1.0.1 on MXNet: the same algorithms, far less overhead per step.

Stock Coach spends most of a CartPole training step (about 4-11 ms here) outside the
maths. Patch 06-fast-path.patch routes these places here:

- networks: Gluon autograd recording (a fixed ~250 us per step on these tiny networks)
  -> the model's own cached graph plus the heads' loss blocks, bound once as MXNet
  executors on the very parameter and gradient arrays Gluon uses (_Graphs), without the
  operators that compute the identity with the presets' settings (fold_identity_ops);
- DQN: target pass, prediction pass, Python loop for the TD targets, training pass -> one
  bound graph doing target pass, float64 targets and training pass (_DQNStep);
- update: gradients copied out to `accumulated_gradients` and back, a norm computed with
  two MXNet calls per parameter, MXNet's scalar Adam kernel -> the same float32 Adam
  arithmetic in place, one compiled loop per parameter on the trainer's own arrays
  (InPlaceAdam, smrl_coach.kernels);
- replay memory: multiprocessing.Manager locks (an IPC round trip per acquire) for a memory
  no other process uses -> in-process locks;
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
is the fast path. Read once, when this module is first imported (at process start).
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from smrl_coach import kernels

ENV_VAR = "SMRL_COACH_FAST"
_OFF_VALUES = {"0", "false", "no", "off", "stock"}


def _read_switch() -> bool:
    return os.environ.get(ENV_VAR, "1").strip().lower() not in _OFF_VALUES


FAST = _read_switch()


def enabled() -> bool:
    """True when the fast path is on (SMRL_COACH_FAST unset or not 0/false/no/off)."""
    return FAST


def describe() -> str:
    """One line for the job's log: which Coach runs."""
    if FAST:
        return f"Coach fast path: on (smrl_coach.fast_coach, Adam kernel: {kernels.backend()}; {ENV_VAR}=0 for stock Coach)"
    return f"Coach fast path: off ({ENV_VAR}={os.environ.get(ENV_VAR)}): stock Coach"


# -- MXNet engine settings ----------------------------------------------------------------

def configure_engine() -> None:
    """MXNet engine settings that suit tiny networks; must run before MXNet's first operator.

    NaiveEngine runs each operator synchronously on the calling thread: for a 256x512
    network on a batch of 32 the threaded engine's hand-off to worker threads costs more
    than the operators themselves. A value the user set is never overridden, and the GPU
    image keeps MXNet's default engine (the fast path covers CPU networks only).
    """
    if FAST and os.environ.get("SMRL_IMAGE_VARIANT", "cpu") != "gpu":
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
    if not FAST or _runtime_configured:
        return
    _runtime_configured = True
    import ctypes
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
    if FAST:
        import gc
        gc.freeze()


# -- replay-memory lock -----------------------------------------------------------------

class LocalReaderWriterLock:
    """Coach's ReaderWriterLock for a memory that only this process uses.

    Stock Coach builds its two locks with `multiprocessing.Manager().Lock()` (a server
    process per lock, an IPC round trip per acquire/release) even when the memory is not
    shared. Same protocol, in-process locks.
    """

    def __init__(self) -> None:
        self.num_readers_lock = threading.Lock()
        self.writers_lock = threading.Lock()
        self.num_readers = 0
        self.now_writing = False

    def some_worker_is_reading(self) -> bool:
        return self.num_readers > 0

    def some_worker_is_writing(self) -> bool:
        return self.now_writing is True

    def lock_writing_and_reading(self) -> None:
        self.writers_lock.acquire()
        self.now_writing = True

    def release_writing_and_reading(self) -> None:
        self.now_writing = False
        self.writers_lock.release()

    def lock_writing(self) -> None:
        with self.num_readers_lock:
            self.num_readers += 1

    def release_writing(self) -> None:
        with self.num_readers_lock:
            self.num_readers -= 1


class LazyManagerLock:
    """A `Manager().Lock()` created on first use (no server process for locks never used)."""

    def __init__(self) -> None:
        self._lock = None

    def _get(self):
        if self._lock is None:
            from multiprocessing import Manager
            self._lock = Manager().Lock()
        return self._lock

    def acquire(self, *args, **kwargs):
        return self._get().acquire(*args, **kwargs)

    def release(self):
        return self._get().release()


def use_local_memory_lock(memory: Any) -> None:
    """Gives a memory that is not shared between processes an in-process lock."""
    if memory is not None and hasattr(memory, "reader_writer_lock"):
        memory.reader_writer_lock = LocalReaderWriterLock()


# -- MXNet graphs -----------------------------------------------------------------------
#
# Coach runs its hybridised Gluon networks through Gluon's imperative autograd: every
# training step records the cached graph and the loss blocks, then builds and runs the
# backward pass, at a fixed cost of about 250 us of bookkeeping on these tiny networks
# (more than the arithmetic). The same cached graph (Gluon's own `_cached_graph` symbol
# of the model, plus the heads' loss blocks called on symbols), bound once as an MXNet
# executor on the very parameter and gradient arrays Gluon uses, runs the same operators
# for a fraction of that: forward and backward of Coach's DQN network take ~200 us
# instead of ~420 us, a batch-1 prediction ~20 us instead of ~50 us.

_MAX_EXECUTORS = 8     # per network: distinct input shapes kept bound
_BIND_AFTER = 2        # a shape is bound the second time it is seen (one-off shapes stay in Gluon)


class _NotCovered(Exception):
    """A network or case the executor path does not handle: Coach's own code runs it."""


def _to_f32(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


# -- operators that compute the identity ------------------------------------------------
#
# Coach's networks carry operators that leave their input unchanged with the presets'
# settings, and on 32x512 activations MXNet's scalar elementwise kernels make them cost
# more than the network's matrix products (~235 us of a ~490 us DQN step here):
# - the vector embedder's input scaling, x / rescaling - offset, with rescaling 1, offset 0;
# - ScaledGradHead's gradient rescaling, (1 - s) * BlockGrad(x) + s * x, with s = 1 (the
#   head's `rescale_gradient_from_head_by_factor`, a constant): forward x, backward the
#   incoming gradient times 1.
# The bound graphs skip them. Bit for bit the same values and gradients for every finite x
# (0 * x + x is x only when x is finite; an infinite activation would give NaN in stock
# Coach and inf here: training has diverged either way).

_IDENTITY_SCALAR_OPS = {"_div_scalar": 1.0, "_mul_scalar": 1.0, "_minus_scalar": 0.0, "_plus_scalar": 0.0}


def fold_identity_ops(symbol: Any, constants: Dict[str, np.ndarray]) -> Any:
    """`symbol` without the operators that compute the identity for these constant values.

    `constants`: the values of the graph's constant (grad_req null) parameters. Returns
    the same symbol object when there is nothing to fold.
    """
    import json
    import mxnet as mx
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    alias: Dict[int, list] = {}   # node -> the input entry it passes through unchanged

    def resolve(entry: list) -> list:
        while entry[0] in alias and entry[1] == 0:
            entry = alias[entry[0]]
        return entry

    def producer(entry: list, op: str) -> Optional[dict]:
        node = nodes[resolve(entry)[0]]
        return node if node["op"] == op else None

    def is_one(entry: list) -> bool:
        node = nodes[resolve(entry)[0]]
        value = constants.get(node["name"]) if node["op"] == "null" else None
        return value is not None and value.shape == (1,) and value[0] == 1.0

    def scalar_is(node: dict, value: float) -> bool:
        try:
            return float(node.get("attrs", {}).get("scalar", "nan")) == value
        except ValueError:
            return False

    for index, node in enumerate(nodes):
        op, inputs = node["op"], node.get("inputs", [])
        if op in _IDENTITY_SCALAR_OPS and scalar_is(node, _IDENTITY_SCALAR_OPS[op]):
            alias[index] = inputs[0]
        elif op == "elemwise_add" and len(inputs) == 2:
            # (1 - s) * BlockGrad(x) + s * x, either order of the sum, s == [1.0]
            for blocked_entry, scaled_entry in (inputs, inputs[::-1]):
                blocked, scaled = producer(blocked_entry, "broadcast_mul"), producer(scaled_entry, "broadcast_mul")
                if blocked is None or scaled is None:
                    continue
                one_minus_s, block = (producer(e, kind) for e, kind in zip(blocked["inputs"], ("_rminus_scalar", "BlockGrad")))
                s, x = (resolve(e) for e in scaled["inputs"])
                if one_minus_s is not None and block is not None and scalar_is(one_minus_s, 1.0) \
                        and resolve(one_minus_s["inputs"][0]) == s and is_one(s) \
                        and resolve(block["inputs"][0]) == x:
                    alias[index] = x
                    break
    if not alias:
        return symbol

    # Keep what the heads still reach, in the original (topological) order.
    heads = [resolve(h) for h in graph["heads"]]
    reached, stack = set(), [h[0] for h in heads]
    while stack:
        index = stack.pop()
        if index not in reached:
            reached.add(index)
            stack.extend(resolve(e)[0] for e in nodes[index].get("inputs", []))
    order = sorted(reached)
    renumber = {old: new for new, old in enumerate(order)}

    def remap(entry: list) -> list:
        entry = resolve(entry)
        return [renumber[entry[0]], entry[1]] + entry[2:]

    new_nodes = []
    for old in order:
        node = dict(nodes[old])
        node["inputs"] = [remap(e) for e in node.get("inputs", [])]
        new_nodes.append(node)
    folded = {"nodes": new_nodes, "arg_nodes": [i for i, n in enumerate(new_nodes) if n["op"] == "null"],
              "heads": [remap(h) for h in graph["heads"]], "attrs": graph.get("attrs", {})}
    return mx.sym.load_json(json.dumps(folded))


class _Graphs:
    """Bound executors of one MxnetArchitecture (online or target network)."""

    def __init__(self, arch: Any) -> None:
        model = arch.model
        inputs, out = model._cached_graph
        self.arch = arch
        self.input_names = [i.name for i in inputs]
        self.out_format = model._out_format
        self.n_out = len(out.list_outputs())
        self.ctx = arch._devices[0]
        self.embedders = [emb.embedder_name for emb in model.nets[0].input_embedders]
        if len(self.embedders) != len(self.input_names):
            raise _NotCovered("inputs")
        if out.list_auxiliary_states():
            raise _NotCovered("auxiliary states (batch norm)")
        params = {}
        for block in [model] + list(arch.losses):
            for p in block.collect_params().values():
                params[p.name] = p
        for p in params.values():
            if p._data is None or len(p._data) != 1 or p._stype != "default" or np.dtype(p.dtype) != np.float32:
                raise _NotCovered("parameter %s" % p.name)
        self.params = params
        self.out = fold_identity_ops(out, {name: p._data[0].asnumpy() for name, p in params.items()
                                           if p.grad_req == "null"})
        self.forward_execs = OrderedDict()
        self.train_execs = OrderedDict()
        self.seen: Dict[tuple, int] = {}
        self.train_symbols: Dict[tuple, Any] = {}
        self._token = self._param_token()

    def _param_token(self) -> tuple:
        return tuple((id(p._data[0]), id(p._grad[0]) if p._grad is not None else 0) for p in self.params.values())

    def check(self) -> None:
        """Gluon re-created a parameter array (e.g. re-initialisation): bind again."""
        token = self._param_token()
        if token != self._token:
            self.forward_execs.clear()
            self.train_execs.clear()
            self._token = token

    def _bind(self, symbol: Any, shapes: Dict[str, tuple], train: bool):
        from mxnet import nd
        args, grads, reqs = {}, {}, {}
        for name in symbol.list_arguments():
            if name in shapes:
                args[name] = nd.empty(shapes[name], ctx=self.ctx, dtype=np.float32)
                reqs[name] = "null"
                continue
            p = self.params.get(name)
            if p is None:
                raise _NotCovered("argument %s" % name)
            args[name] = p._data[0]
            if train and p.grad_req == "write" and p._grad is not None:
                grads[name] = p._grad[0]
                reqs[name] = "write"
            elif p.grad_req in ("null", "write"):
                reqs[name] = "null"
            else:
                raise _NotCovered("grad_req %s" % p.grad_req)
        # No subgraph partitioning: MKLDNN's fused inference operators cache the weights
        # at their first run (they assume a frozen model) and would miss every update.
        saved = os.environ.get("MXNET_SUBGRAPH_BACKEND")
        os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
        try:
            return symbol.bind(self.ctx, args=args, args_grad=grads or None, grad_req=reqs)
        finally:
            if saved is None:
                del os.environ["MXNET_SUBGRAPH_BACKEND"]
            else:
                os.environ["MXNET_SUBGRAPH_BACKEND"] = saved

    def _take(self, cache: "OrderedDict", key: tuple, make) -> Any:
        ex = cache.get(key)
        if ex is not None:
            cache.move_to_end(key)
            return ex
        count = self.seen.get(key, 0) + 1
        if len(self.seen) > 4096:
            self.seen.clear()
        self.seen[key] = count
        if count < _BIND_AFTER:
            return None
        ex = cache[key] = make()
        if len(cache) > _MAX_EXECUTORS:
            cache.popitem(last=False)
        return ex

    def predict(self, inputs: Dict[str, np.ndarray]) -> Optional[list]:
        """The network's outputs as numpy arrays, in Gluon's output structure, or None
        when this input shape is not bound (yet)."""
        arrays = [_to_f32(inputs[name]) for name in self.embedders]
        key = tuple(a.shape for a in arrays)
        ex = self._take(self.forward_execs, key, lambda: self._bind(
            self.out, {n: a.shape for n, a in zip(self.input_names, arrays)}, train=False))
        if ex is None:
            return None
        views = _arg_views(ex, self.input_names)
        for name, a in zip(self.input_names, arrays):
            views[name][...] = a
        _run(ex, False)
        from mxnet.gluon.block import _regroup
        return _regroup([np.array(o) for o in _output_views(ex)], self.out_format)

    def _train_symbol(self, target_count: int, agent_keys: tuple, fetches: tuple):
        key = (target_count, agent_keys, fetches)
        built = self.train_symbols.get(key)
        if built is not None:
            return built
        import mxnet as mx
        from rl_coach.architectures.mxnet_components import utils
        from rl_coach.architectures.mxnet_components.heads.head import (
            LOSS_OUT_TYPE_LOSS, LOSS_OUT_TYPE_REGULARIZATION)
        arch = self.arch
        outs = tuple(self.out[i] for i in range(self.n_out))
        target_syms = [mx.sym.var("smrl_target%d" % i) for i in range(target_count)]
        agent_syms = {k: mx.sym.var("smrl_input_" + k) for k in agent_keys}
        # the same per-head wiring as MxnetArchitecture.accumulate_gradients, on symbols
        out_per_head = utils.split_outputs_per_head(outs, arch.model.output_heads)
        tgt_per_loss = utils.split_targets_per_loss(target_syms, arch.losses)
        losses, regularizations = [], []
        fetch_syms = [None] * len(fetches)
        for h, h_loss, h_out, l_tgt in zip(arch.model.output_heads, arch.losses, out_per_head, tgt_per_loss):
            l_in = utils.get_loss_agent_inputs(agent_syms, head_type_idx=h.head_type_idx, loss=h_loss)
            l_args = utils.align_loss_args(h_out, l_in, l_tgt, h_loss)
            loss_outputs = utils.loss_output_dict(utils.to_list(h_loss(*l_args)), h_loss.output_schema)
            losses.extend(loss_outputs.get(LOSS_OUT_TYPE_LOSS, []))
            regularizations.extend(loss_outputs.get(LOSS_OUT_TYPE_REGULARIZATION, []))
            for i, (head_type_idx, fetch_name) in enumerate(fetches):
                if head_type_idx == h.head_type_idx:
                    fetch_syms[i] = loss_outputs[fetch_name]
        if any(f is None for f in fetch_syms):
            raise _NotCovered("fetch")
        total_list = losses + regularizations
        # Coach: total_loss = nd.add_n(*total_loss_list); total_loss.backward()
        group = [mx.sym.MakeLoss(mx.sym.add_n(*total_list))] + [mx.sym.BlockGrad(x) for x in total_list]
        layout = [len(total_list)]
        for f in fetch_syms:
            group.extend(mx.sym.BlockGrad(x) for x in f)
            layout.append(len(f))
        built = (mx.sym.Group(group), [t.name for t in target_syms], layout)
        self.train_symbols[key] = built
        return built

    def train(self, inputs: Dict[str, np.ndarray], targets: List[Any], fetches: tuple):
        """Forward and backward of accumulate_gradients; returns (total loss, [losses],
        [fetched]) converted as Coach converts them, or None when not bound (yet)."""
        from rl_coach.architectures.mxnet_components import utils
        agent_keys = tuple(sorted(k for k in inputs if k.startswith("output_")))
        symbol, target_names, layout = self._train_symbol(len(targets), agent_keys, fetches)
        names = self.input_names + ["smrl_input_" + k for k in agent_keys] + target_names
        arrays = [_to_f32(inputs[n]) for n in self.embedders] + [_to_f32(inputs[k]) for k in agent_keys] \
            + [_to_f32(t) for t in targets]
        key = (tuple(a.shape for a in arrays), agent_keys, len(targets), fetches)
        ex = self._take(self.train_execs, key, lambda: self._bind(
            symbol, {n: a.shape for n, a in zip(names, arrays)}, train=True))
        if ex is None:
            return None
        arg_dict = ex.arg_dict
        for name, a in zip(names, arrays):
            arg_dict[name]._sync_copyfrom(a)
        outputs = _run(ex, True)
        total = utils.asnumpy_or_asscalar(outputs[0])
        groups, pos = [], 1
        for n in layout:
            groups.append(utils.asnumpy_or_asscalar(list(outputs[pos:pos + n])))
            pos += n
        return total, groups[0], groups[1:]


def _run(ex: Any, train: bool) -> list:
    """Executor.forward (and backward when training), reusing the executor's output
    arrays (Executor.forward wraps them in new NDArray handles on every call). Returns
    when the results are there (at once with the NaiveEngine), so that numpy views of the
    executor's arrays (_arg_views, _output_views) can be read and written."""
    import ctypes
    from mxnet.base import _LIB, check_call
    check_call(_LIB.MXExecutorForward(ex.handle, ctypes.c_int(int(train))))
    if train:
        check_call(_LIB.MXExecutorBackwardEx(ex.handle, 0, None, ctypes.c_int(1)))
    if os.environ.get("MXNET_ENGINE_TYPE") != "NaiveEngine":
        check_call(_LIB.MXNDArrayWaitAll())
    return _run_outputs(ex)


def _arg_views(ex: Any, names: Sequence[str]) -> Dict[str, np.ndarray]:
    """numpy views of an executor's input arrays: filling them costs a numpy copy, where
    NDArray._sync_copyfrom costs ~10 us of Python checks per array."""
    views = ex.__dict__.get("_smrl_arg_views")
    if views is None:
        views = ex.__dict__["_smrl_arg_views"] = {name: np_view(ex.arg_dict[name]) for name in names}
    return views


def _output_views(ex: Any) -> List[np.ndarray]:
    """numpy views of an executor's outputs (valid after _run; copy what is kept)."""
    views = ex.__dict__.get("_smrl_output_views")
    if views is None:
        views = ex.__dict__["_smrl_output_views"] = [np_view(o) for o in _run_outputs(ex)]
    return views


def _run_outputs(ex: Any) -> list:
    outputs = ex.__dict__.get("_smrl_outputs")
    if outputs is None:
        outputs = ex.__dict__["_smrl_outputs"] = ex._get_outputs()
    return outputs


def graphs(arch: Any) -> Optional[_Graphs]:
    """The executor cache of a network, or None when the fast path does not cover it."""
    if not FAST:
        return None
    g = arch.__dict__.get("_smrl_graphs")
    if g is None:
        if arch.__dict__.get("_smrl_not_covered") or len(arch._devices) != 1 \
                or arch._devices[0].device_type != "cpu" \
                or arch.middleware.__class__.__name__ == "LSTMMiddleware" or not arch.model._cached_graph:
            return None
        try:
            g = _Graphs(arch)
        except _NotCovered:
            arch.__dict__["_smrl_not_covered"] = True
            return None
        arch.__dict__["_smrl_graphs"] = g
    g.check()
    return g


def predict(arch: Any, inputs: Dict[str, np.ndarray]) -> Optional[list]:
    """The forward pass of MxnetArchitecture.predict as numpy outputs, or None (run Coach's)."""
    g = graphs(arch)
    return None if g is None else g.predict(inputs)


# -- one training step ------------------------------------------------------------------

def can_train_fast(arch: Any) -> bool:
    """The cases the fast training step covers; anything else runs Coach's own code."""
    return (
        FAST
        and arch.trainer is not None
        and len(arch._devices) == 1
        and arch._devices[0].device_type == "cpu"
        and not arch.distributed_training
        and arch.global_network is None
        and not arch.network_parameters.clip_gradients
        and arch.optimizer_type != "LBFGS"
    )


def _grads(arch: Any) -> List[Any]:
    """The model's gradient arrays in collect_params() order."""
    return [p._grad[0] for p in arch.model.collect_params().values() if p.grad_req != "null"]


# -- Adam and the gradient norm -----------------------------------------------------------

def global_norm(grads: Sequence[np.ndarray]) -> np.float32:
    """sqrt(sum of squares of all gradients) (Coach: two MXNet calls per parameter), from
    numpy views of the gradient buffers. Only logged (the 'Grads (unclipped)' signal)."""
    total = np.float32(0)
    for g in grads:
        flat = g.reshape(-1)
        total = total + np.dot(flat, flat)
    return np.float32(np.sqrt(total))


def np_view(array: Any) -> np.ndarray:
    """A numpy array that shares memory with a float32/float64 CPU NDArray (no copy).

    Only valid while the NDArray lives and while no MXNet operator on it is pending:
    callers wait for the engine first (with the NaiveEngine nothing is ever pending).
    """
    import ctypes
    import mxnet as mx
    c_type = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}[np.dtype(array.dtype)]
    assert array.context.device_type == "cpu" and array.stype == "default"
    ptr = ctypes.c_void_p()
    mx.base.check_call(mx.base._LIB.MXNDArrayGetData(array.handle, ctypes.byref(ptr)))
    buffer = (c_type * array.size).from_address(ptr.value)
    return np.ctypeslib.as_array(buffer).reshape(array.shape)


def _mx_float(values: Sequence[float]) -> np.ndarray:
    """The float32 values MXNet's operators see for these Python floats.

    Operator arguments reach MXNet as strings that its parameter parser turns into C++
    floats; clip's a_min/a_max go the same way as adam_update's lr, betas and epsilon,
    so this returns exactly what the adam_update kernel would use.
    """
    from mxnet import nd
    global _CLIP_INPUT
    if _CLIP_INPUT is None:
        _CLIP_INPUT = nd.zeros((1,))
    return np.array([nd.clip(_CLIP_INPUT, a_min=v, a_max=v).asscalar() for v in values], dtype=np.float32)


_CLIP_INPUT = None


class InPlaceAdam:
    """Gluon Trainer.update(batch_size=1) for MXNet's Adam, done in place.

    MXNet's adam_update kernel is scalar code: on the 512x256 weight of Coach's DQN
    network it takes about 3x as long as the same float32 arithmetic done with numpy's
    vectorised loops, 18x as long as one compiled loop (smrl_coach.kernels). This class
    performs exactly that kernel's arithmetic (float32, same order of operations, the same
    float32 lr/betas/epsilon as the operator parses), on the trainer's own weights and
    Adam states, and advances the optimiser's update counts as
    Optimizer.update does, so stock and fast updates can be mixed and produce the same
    bits. Covered: plain Adam, no lr scheduler, no weight decay, no gradient clipping, no
    multi-precision, rescale_grad 1, lr_mult 1, dense float32 parameters on one CPU.
    """

    def __init__(self, trainer: Any) -> None:
        import mxnet as mx
        self.trainer = trainer
        opt = trainer._optimizer
        self.opt = opt
        self.params = [(i, p) for i, p in enumerate(trainer._params) if p.grad_req != "null"]
        self.updater = trainer._updaters[0]
        b1, b2, eps = _mx_float([opt.beta1, opt.beta2, opt.epsilon])
        self.b1, self.b2, self.eps = b1, b2, eps
        self.one_minus_b1 = np.float32(1) - b1
        self.one_minus_b2 = np.float32(1) - b2
        self._views = None
        self._lr_calls = 0
        self._lr_always_parse = False

    @staticmethod
    def supports(trainer: Any) -> bool:
        import mxnet as mx
        opt = getattr(trainer, "_optimizer", None)
        if type(opt) is not mx.optimizer.Adam or opt.lr_scheduler is not None or opt.wd != 0 \
                or opt.clip_gradient is not None or opt.multi_precision or len(trainer._contexts) != 1 \
                or trainer._contexts[0].device_type != "cpu" or not trainer._kv_initialized \
                or trainer._params_to_init or (trainer._kvstore and trainer._update_on_kvstore) \
                or len(trainer._updaters) != 1 or trainer._scale != 1.0:
            return False
        for i, p in enumerate(trainer._params):
            if p.grad_req == "null":
                continue
            if p.grad_req != "write" or p.lr_mult != 1.0 or p._data is None or len(p._data) != 1 \
                    or p._data[0].dtype != np.float32 or p._stype != "default" or p._grad_stype != "default" \
                    or i not in trainer._updaters[0].states:
                return False
        return True

    def _arrays(self):
        current = [(p._data[0], p._grad[0], self.updater.states[i]) for i, p in self.params]
        if self._views is None or any(a is not b[0] or g is not b[1] or s is not b[2]
                                      for (a, g, s), b in zip(current, self._views[0])):
            views = []
            for w, g, (mean, var) in current:
                scratch = (np.empty(w.size, np.float32), np.empty(w.size, np.float32)) \
                    if kernels.backend() == "numpy" else ()
                views.append(tuple(np_view(a).reshape(-1) for a in (w, g, mean, var)) + (scratch,))
            self._views = (current, views)
        return self._views

    def _lr(self, lr: float) -> np.float32:
        """The float32 lr the adam_update operator would use. MXNet parses the decimal
        string of the Python float; that almost always gives the correctly rounded float32,
        which is used after checking it against MXNet's parser (~50 us a call) on the first
        100 updates and every 100th after that. One mismatch and every value is parsed by
        MXNet."""
        value = np.float32(lr)
        self._lr_calls += 1
        if self._lr_always_parse or self._lr_calls <= 100 or self._lr_calls % 100 == 0:
            parsed = _mx_float([lr])[0]
            if parsed != value:
                self._lr_always_parse = True
            value = parsed
        return value

    def update(self, check_fresh: bool = True) -> np.float32:
        """One Adam step of every parameter; returns the global norm of the gradients
        (before the update, as Coach computes it)."""
        import mxnet as mx
        mx.nd.waitall()
        current, views = self._arrays()
        norm = global_norm([v[1] for v in views])
        opt = self.opt
        opt.rescale_grad = self.trainer._scale / 1  # Trainer._check_and_rescale_grad(scale / batch_size)
        b1, b2, eps, c1, c2 = self.b1, self.b2, self.eps, self.one_minus_b1, self.one_minus_b2
        last_lr, lr32 = None, None
        for (index, param), (w_nd, _, _), (w, g, mean, var, scratch) in zip(self.params, current, views):
            if check_fresh and not w_nd._fresh_grad:
                raise UserWarning(
                    "Gradient of Parameter `%s` on context %s has not been updated by backward since last `step`."
                    % (param.name, str(w_nd.context)))
            opt._update_count(index)
            t = opt._index_update_count[index]
            lr = opt._get_lr(index)
            lr *= math.sqrt(1. - opt.beta2 ** t) / (1. - opt.beta1 ** t)
            if lr != last_lr:
                last_lr, lr32 = lr, self._lr(lr)
            kernels.adam_update(w, g, mean, var, lr32, b1, b2, c1, c2, eps, scratch)
            if check_fresh:
                w_nd._fresh_grad = False
        return norm


def set_weights(arch: Any, weights: Any, new_rate: float) -> bool:
    """MxnetArchitecture.set_weights for a plain copy (new_rate 1, the target-network update
    of DQN and PPO), or False when not covered (Coach's code runs).

    Coach computes new_rate * new + (1 - new_rate) * old with two _mul_scalar and one add
    per parameter and writes the result with Gluon's set_data: ~3 ms for the DQN network,
    every 100 steps. Done here on numpy views of the same arrays with the same float32
    operations (new * 1.0f, old * 0.0f, their sum), so the bits are the same, ~1% of the time.
    """
    if not FAST or new_rate != 1.0:
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


def apply_update(arch: Any, fresh: bool = True) -> np.float32:
    """Trainer.update(batch_size=1) of Coach's apply_gradients, and the unclipped gradient
    norm (computed before the update, as Coach does). fresh=False: the gradients come
    from an executor, which does not flag them for Gluon's stale-gradient check."""
    import mxnet as mx
    adam = arch.__dict__.get("_smrl_adam")
    if adam is None and InPlaceAdam.supports(arch.trainer):
        adam = arch.__dict__["_smrl_adam"] = InPlaceAdam(arch.trainer)
    if adam is not None:
        return adam.update(check_fresh=fresh)
    mx.nd.waitall()
    norm = global_norm([np_view(g) for g in _grads(arch)])
    if not fresh:
        for p in arch.trainer._params:
            if p.grad_req != "null":
                for arr in p.list_data():
                    arr._fresh_grad = True
    arch.trainer.update(batch_size=1)
    return norm


def train_step(arch: Any, inputs: Dict[str, np.ndarray], targets: Any, additional_fetches: Any = None):
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
    except _NotCovered:
        arch.__dict__["_smrl_not_covered"] = True
        arch.__dict__.pop("_smrl_graphs", None)
        return None
    if result is None:
        return None
    total, losses, fetched = result
    norm = apply_update(arch, fresh=False)
    return total, losses, norm, fetched


# -- DQN --------------------------------------------------------------------------------

class _DQNStep:
    """One DQN training step as a single bound graph over the online and target networks.

    Coach's DQNAgent.learn_from_batch runs the target network on the next states and the
    online network on the states (two forward passes, two device-to-host copies), loops
    over the batch in Python to put r + discount * (1 - done) * max_a Q'(s', a) in place
    of Q(s, a) for the action taken, and then trains the online network on the states and
    those targets (a third forward pass). This graph does the same in one forward and
    backward pass:

        q      = online(states)                     (the forward pass that is trained)
        q_next = BlockGrad(target(next_states))
        y      = float32(r + c * float64(max_a q_next))     c = (1 - done) * discount
        td     = where(action taken, y, BlockGrad(q))
        loss   = QHeadLoss(q, td)                   (Coach's own loss block)

    The target arithmetic is done in float64 from the same float64 r and c numpy computes,
    then rounded to float32, as Coach's loop does. For the actions not taken the target is
    the online network's own prediction, as in Coach (there it comes from the separate
    forward pass, with the same weights and the same operators, so the same values): their
    error and gradient are exactly zero in both.
    """

    def __init__(self, agent: Any, online: "_Graphs", target: "_Graphs") -> None:
        import mxnet as mx
        from rl_coach.architectures.mxnet_components.heads.q_head import QHeadLoss
        if online.n_out != 1 or target.n_out != 1 or len(online.input_names) != 1 \
                or len(online.arch.losses) != 1 or not isinstance(online.arch.losses[0], QHeadLoss):
            raise _NotCovered("not a plain Q network")
        self.online, self.target = online, target
        self.key = online.embedders[0]
        q = online.out[0]
        q_next = mx.sym.BlockGrad(target.out(**{target.input_names[0]: mx.sym.var("smrl_next_state")})[0])
        r = mx.sym.var("smrl_reward", dtype="float64")
        c = mx.sym.var("smrl_continue", dtype="float64")
        mask = mx.sym.var("smrl_action_taken")
        y = mx.sym.cast(r + c * mx.sym.cast(mx.sym.max(q_next, axis=1), dtype="float64"), dtype="float32")
        td = mx.sym.where(mask, mx.sym.broadcast_like(mx.sym.expand_dims(y, axis=1), q), mx.sym.BlockGrad(q))
        loss = online.arch.losses[0](q, td)
        loss = loss[0] if isinstance(loss, (list, tuple)) else loss
        self.symbol = mx.sym.Group([mx.sym.MakeLoss(mx.sym.add_n(loss)), mx.sym.BlockGrad(loss), mx.sym.BlockGrad(td)])
        self.state_name = online.input_names[0]
        self.input_names = [self.state_name, "smrl_next_state", "smrl_reward", "smrl_continue", "smrl_action_taken"]
        self.params = dict(target.params)
        self.params.update(online.params)
        self.execs: Dict[tuple, Any] = {}

    def _bind(self, batch: int, state_shape: tuple, n_actions: int):
        from mxnet import nd
        ctx = self.online.ctx
        inputs = {
            self.state_name: ((batch,) + state_shape, np.float32),
            "smrl_next_state": ((batch,) + state_shape, np.float32),
            "smrl_reward": ((batch,), np.float64),
            "smrl_continue": ((batch,), np.float64),
            "smrl_action_taken": ((batch, n_actions), np.float32),
        }
        args, grads, reqs = {}, {}, {}
        online_names = set(self.online.params)
        for name in self.symbol.list_arguments():
            if name in inputs:
                shape, dtype = inputs[name]
                args[name] = nd.empty(shape, ctx=ctx, dtype=dtype)
                reqs[name] = "null"
                continue
            p = self.params[name]
            args[name] = p._data[0]
            if name in online_names and p.grad_req == "write":
                grads[name] = p._grad[0]
                reqs[name] = "write"
            elif p.grad_req in ("null", "write"):
                reqs[name] = "null"
            else:
                raise _NotCovered("grad_req")
        saved = os.environ.get("MXNET_SUBGRAPH_BACKEND")
        os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
        try:
            return self.symbol.bind(ctx, args=args, args_grad=grads, grad_req=reqs)
        finally:
            if saved is None:
                del os.environ["MXNET_SUBGRAPH_BACKEND"]
            else:
                os.environ["MXNET_SUBGRAPH_BACKEND"] = saved

    def _columns(self, batch: Any):
        """states, next states, actions, rewards and game-overs of the batch in one pass
        over its transitions (Coach's Batch makes five); the same arrays Batch returns."""
        key = self.key
        try:
            rows = [(t._state[key], t._next_state[key], t._action, t._reward, t._game_over)
                    for t in batch.transitions]
        except (KeyError, TypeError):
            rows = None
        columns = None if rows is None else list(zip(*rows))
        if columns is None or any(None in column for column in columns[2:]):
            keys = [key]
            return (_to_f32(batch.states(keys)[key]), _to_f32(batch.next_states(keys)[key]), batch.actions(),
                    batch.rewards(), batch.game_overs())
        states, next_states, actions, rewards, game_overs = columns
        # float64 observations rounded to float32 once, as nd.array would round them
        return (np.array(states, dtype=np.float32), np.array(next_states, dtype=np.float32),
                np.array(actions), np.array(rewards), np.array(game_overs))

    def run(self, agent: Any, batch: Any):
        states, next_states, actions, rewards, game_overs = self._columns(batch)
        n = len(states)
        n_actions = self.online.arch.model.output_heads[0].num_actions
        token = (self.online._token, self.target._token)
        key = (n, states.shape[1:], n_actions)
        entry = self.execs.get(key)
        if entry is None or entry[0] != token:
            if len(self.execs) > 4:
                self.execs.clear()
            entry = self.execs[key] = (token, self._bind(n, states.shape[1:], n_actions))
        ex = entry[1]
        views = _arg_views(ex, self.input_names)
        views[self.state_name][...] = states
        views["smrl_next_state"][...] = next_states
        views["smrl_reward"][...] = rewards
        views["smrl_continue"][...] = (1.0 - game_overs) * agent.ap.algorithm.discount
        mask = views["smrl_action_taken"]
        mask[...] = 0.0
        mask[np.arange(n), actions] = 1.0
        _run(ex, True)
        _, loss, td_targets = _output_views(ex)
        agent.q_values.add_sample(np.array(td_targets))   # Coach logs the filled-in targets
        (loss,) = loss.reshape(-1)   # asscalar()
        norm = apply_update(self.online.arch, fresh=False)
        return loss, [loss], norm


def dqn_learn_from_batch(agent: Any, batch: Any):
    """DQNAgent.learn_from_batch for a plain DQN (no prioritised replay), through _DQNStep.
    Returns None when not covered, so the caller runs Coach's code."""
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
                raise _NotCovered("agent")
            g_online, g_target = graphs(online), graphs(target)
            if g_online is None or g_target is None:
                raise _NotCovered("networks")
            step = agent.__dict__["_smrl_dqn_step"] = _DQNStep(agent, g_online, g_target)
        except _NotCovered:
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
    if not FAST or type(agent).__name__ not in _READ_ONLY_BATCH_AGENTS:
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
    if not FAST:
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
