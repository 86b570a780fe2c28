"""The bound executors of one Coach MxnetArchitecture: predictions and training passes.

The graph is Gluon's own `_cached_graph` symbol of the model (plus the heads' loss blocks
called on symbols, for training), without the operators that compute the identity, bound
on Gluon's parameter and gradient arrays (smrl_coach.executors). An input shape is bound
the `bind_after`-th time it is seen, so that one-off shapes stay in Gluon.

mxnet and rl_coach are imported inside the methods: smrl_coach.fast_coach imports this
module while rl_coach is being imported, before it has chosen MXNet's engine.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from smrl_coach.executors import NotCovered, arg_views, bind, fold_identity_ops, output_views, run, to_f32

MAX_EXECUTORS = 8     # per network: distinct input shapes kept bound


class NetworkGraphs:
    """Bound executors of one MxnetArchitecture (online or target network)."""

    def __init__(self, arch: Any, bind_after: int) -> None:
        model = arch.model
        inputs, out = model._cached_graph
        self.arch = arch
        self.bind_after = bind_after
        self.input_names = [i.name for i in inputs]
        self.out_format = model._out_format
        self.n_out = len(out.list_outputs())
        self.ctx = arch._devices[0]
        self.embedders = [emb.embedder_name for emb in model.nets[0].input_embedders]
        if len(self.embedders) != len(self.input_names):
            raise NotCovered("inputs")
        if out.list_auxiliary_states():
            raise NotCovered("auxiliary states (batch norm)")
        params = {}
        for block in [model] + list(arch.losses):
            for p in block.collect_params().values():
                params[p.name] = p
        for p in params.values():
            if p._data is None or len(p._data) != 1 or p._stype != "default" or np.dtype(p.dtype) != np.float32:
                raise NotCovered(f"parameter {p.name}")
        self.params = params
        self.out = fold_identity_ops(out, {name: p._data[0].asnumpy() for name, p in params.items()
                                           if p.grad_req == "null"})
        self.forward_execs = OrderedDict()
        self.train_execs = OrderedDict()
        self.seen: dict[tuple, int] = {}
        self.train_symbols: dict[tuple, Any] = {}
        self.token = self._param_token()

    def _param_token(self) -> tuple:
        return tuple((id(p._data[0]), id(p._grad[0]) if p._grad is not None else 0) for p in self.params.values())

    def check(self) -> None:
        """Gluon re-created a parameter array (e.g. re-initialisation): bind again."""
        token = self._param_token()
        if token != self.token:
            self.forward_execs.clear()
            self.train_execs.clear()
            self.token = token

    def _bind(self, symbol: Any, shapes: dict[str, tuple], train: bool) -> Any:
        return bind(symbol, self.ctx, {name: (shape, np.float32) for name, shape in shapes.items()},
                    self.params, self.params if train else ())

    def _take(self, cache: OrderedDict, key: tuple, make) -> Any:
        ex = cache.get(key)
        if ex is not None:
            cache.move_to_end(key)
            return ex
        count = self.seen.get(key, 0) + 1
        if len(self.seen) > 4096:
            self.seen.clear()
        self.seen[key] = count
        if count < self.bind_after:
            return None
        ex = cache[key] = make()
        if len(cache) > MAX_EXECUTORS:
            cache.popitem(last=False)
        return ex

    def predict(self, inputs: dict[str, np.ndarray]) -> list | None:
        """The network's outputs as numpy arrays, in Gluon's output structure, or None
        when this input shape is not bound (yet)."""
        arrays = [to_f32(inputs[name]) for name in self.embedders]
        key = tuple(a.shape for a in arrays)
        ex = self._take(self.forward_execs, key, lambda: self._bind(
            self.out, {n: a.shape for n, a in zip(self.input_names, arrays)}, train=False))
        if ex is None:
            return None
        views = arg_views(ex, self.input_names)
        for name, a in zip(self.input_names, arrays):
            views[name][...] = a
        run(ex, False)
        from mxnet.gluon.block import _regroup
        return _regroup([np.array(o) for o in output_views(ex)], self.out_format)

    def _train_symbol(self, target_count: int, agent_keys: tuple, fetches: tuple):
        key = (target_count, agent_keys, fetches)
        built = self.train_symbols.get(key)
        if built is not None:
            return built
        import mxnet as mx
        from rl_coach.architectures.mxnet_components import utils
        from rl_coach.architectures.mxnet_components.heads.head import LOSS_OUT_TYPE_LOSS, LOSS_OUT_TYPE_REGULARIZATION
        arch = self.arch
        outs = tuple(self.out[i] for i in range(self.n_out))
        target_syms = [mx.sym.var(f"smrl_target{i}") for i in range(target_count)]
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
            raise NotCovered("fetch")
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

    def train(self, inputs: dict[str, np.ndarray], targets: list[Any], fetches: tuple):
        """Forward and backward of accumulate_gradients; returns (total loss, [losses],
        [fetched]) converted as Coach converts them, or None when not bound (yet)."""
        from rl_coach.architectures.mxnet_components import utils
        agent_keys = tuple(sorted(k for k in inputs if k.startswith("output_")))
        symbol, target_names, layout = self._train_symbol(len(targets), agent_keys, fetches)
        names = self.input_names + ["smrl_input_" + k for k in agent_keys] + target_names
        arrays = [to_f32(inputs[n]) for n in self.embedders] + [to_f32(inputs[k]) for k in agent_keys] \
            + [to_f32(t) for t in targets]
        key = (tuple(a.shape for a in arrays), agent_keys, len(targets), fetches)
        ex = self._take(self.train_execs, key, lambda: self._bind(
            symbol, {n: a.shape for n, a in zip(names, arrays)}, train=True))
        if ex is None:
            return None
        arg_dict = ex.arg_dict
        for name, a in zip(names, arrays):
            arg_dict[name]._sync_copyfrom(a)
        outputs = run(ex, True)
        total = utils.asnumpy_or_asscalar(outputs[0])
        groups, pos = [], 1
        for n in layout:
            groups.append(utils.asnumpy_or_asscalar(list(outputs[pos:pos + n])))
            pos += n
        return total, groups[0], groups[1:]
