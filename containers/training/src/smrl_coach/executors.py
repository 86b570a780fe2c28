"""MXNet executors bound on the very parameter and gradient arrays Gluon uses.

Coach runs its hybridised Gluon networks through Gluon's imperative autograd: every
training step records the cached graph and the loss blocks, then builds and runs the
backward pass, at a fixed cost of about 250 us of bookkeeping on these tiny networks
(more than the arithmetic). The same cached graph, bound once as an MXNet executor on
Gluon's own arrays, runs the same operators for a fraction of that: forward and backward
of Coach's DQN network take ~200 us instead of ~420 us, a batch-1 prediction ~20 us
instead of ~50 us. The executors' inputs and outputs are read and written through numpy
views, and the graphs are bound without the operators that compute the identity
(smrl_coach.graph_folding).

mxnet is imported inside the functions: smrl_coach.fast_coach imports this module while
rl_coach is being imported, before it has chosen MXNet's engine (configure_engine).
"""
from __future__ import annotations

import ctypes
import json
import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from smrl_coach import graph_folding
from smrl_coach.mxnet_arrays import np_view


class NotCovered(Exception):
    """A network or case the executor path does not handle: Coach's own code runs it."""


def to_f32(array: Any) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def fold_identity_ops(symbol: Any, constants: dict[str, np.ndarray]) -> Any:
    """`symbol` without the operators that compute the identity for these constant values
    (smrl_coach.graph_folding); the same symbol object when there is nothing to fold."""
    import mxnet as mx
    graph = json.loads(symbol.tojson())
    folded = graph_folding.fold_identity_ops(graph, constants)
    return symbol if folded is graph else mx.sym.load_json(json.dumps(folded))


def bind(symbol: Any, ctx: Any, inputs: dict[str, tuple[tuple, Any]], params: dict[str, Any],
         trainable: Collection[str]) -> Any:
    """An executor of `symbol`: new arrays for `inputs` (name -> (shape, dtype)), Gluon's
    own data arrays for the parameters, and Gluon's own gradient arrays, written by the
    backward pass, for the parameters named in `trainable` whose grad_req is "write".
    Raises NotCovered for an argument that is neither, or another grad_req."""
    from mxnet import nd
    args, grads, reqs = {}, {}, {}
    for name in symbol.list_arguments():
        if name in inputs:
            shape, dtype = inputs[name]
            args[name] = nd.empty(shape, ctx=ctx, dtype=dtype)
            reqs[name] = "null"
            continue
        p = params.get(name)
        if p is None:
            raise NotCovered(f"argument {name}")
        args[name] = p._data[0]
        if name in trainable and p.grad_req == "write" and p._grad is not None:
            grads[name] = p._grad[0]
            reqs[name] = "write"
        elif p.grad_req in ("null", "write"):
            reqs[name] = "null"
        else:
            raise NotCovered(f"grad_req {p.grad_req}")
    # No subgraph partitioning: MKLDNN's fused inference operators cache the weights
    # at their first run (they assume a frozen model) and would miss every update.
    saved = os.environ.get("MXNET_SUBGRAPH_BACKEND")
    os.environ["MXNET_SUBGRAPH_BACKEND"] = "NONE"
    try:
        return symbol.bind(ctx, args=args, args_grad=grads or None, grad_req=reqs)
    finally:
        if saved is None:
            del os.environ["MXNET_SUBGRAPH_BACKEND"]
        else:
            os.environ["MXNET_SUBGRAPH_BACKEND"] = saved


def run(ex: Any, train: bool) -> list:
    """Executor.forward (and backward when training), reusing the executor's output
    arrays (Executor.forward wraps them in new NDArray handles on every call). Returns
    when the results are there (at once with the NaiveEngine), so that numpy views of the
    executor's arrays (arg_views, output_views) can be read and written."""
    from mxnet.base import _LIB, check_call
    check_call(_LIB.MXExecutorForward(ex.handle, ctypes.c_int(int(train))))
    if train:
        check_call(_LIB.MXExecutorBackwardEx(ex.handle, 0, None, ctypes.c_int(1)))
    if os.environ.get("MXNET_ENGINE_TYPE") != "NaiveEngine":
        check_call(_LIB.MXNDArrayWaitAll())
    return _outputs(ex)


def arg_views(ex: Any, names: Sequence[str]) -> dict[str, np.ndarray]:
    """numpy views of an executor's input arrays: filling them costs a numpy copy, where
    NDArray._sync_copyfrom costs ~10 us of Python checks per array."""
    views = ex.__dict__.get("_smrl_arg_views")
    if views is None:
        views = ex.__dict__["_smrl_arg_views"] = {name: np_view(ex.arg_dict[name]) for name in names}
    return views


def output_views(ex: Any) -> list[np.ndarray]:
    """numpy views of an executor's outputs (valid after run; copy what is kept)."""
    views = ex.__dict__.get("_smrl_output_views")
    if views is None:
        views = ex.__dict__["_smrl_output_views"] = [np_view(o) for o in _outputs(ex)]
    return views


def _outputs(ex: Any) -> list:
    outputs = ex.__dict__.get("_smrl_outputs")
    if outputs is None:
        outputs = ex.__dict__["_smrl_outputs"] = ex._get_outputs()
    return outputs
