"""The update of Coach's apply_gradients: MXNet's Adam done in place, and the gradient norm.

Coach copies the gradients out to `accumulated_gradients` and back, computes their norm
with two MXNet calls per parameter and runs MXNet's scalar Adam kernel; here the same
float32 Adam arithmetic runs in place, one compiled loop per parameter on the trainer's
own arrays (smrl_coach.kernels), and the norm comes from numpy views of the gradients.

mxnet is imported inside the functions: smrl_coach.fast_coach imports this module while
rl_coach is being imported, before it has chosen MXNet's engine (configure_engine).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from smrl_coach import kernels
from smrl_coach.mxnet_arrays import mx_float, np_view


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


def _grads(arch: Any) -> list[Any]:
    """The model's gradient arrays in collect_params() order."""
    return [p._grad[0] for p in arch.model.collect_params().values() if p.grad_req != "null"]


def global_norm(grads: Sequence[np.ndarray]) -> np.float32:
    """sqrt(sum of squares of all gradients) (Coach: two MXNet calls per parameter), from
    numpy views of the gradient buffers. Only logged (the 'Grads (unclipped)' signal)."""
    total = np.float32(0)
    for g in grads:
        flat = g.reshape(-1)
        total = total + np.dot(flat, flat)
    return np.float32(np.sqrt(total))


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
        self.trainer = trainer
        opt = trainer._optimizer
        self.opt = opt
        self.params = [(i, p) for i, p in enumerate(trainer._params) if p.grad_req != "null"]
        self.updater = trainer._updaters[0]
        b1, b2, eps = mx_float([opt.beta1, opt.beta2, opt.epsilon])
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
            parsed = mx_float([lr])[0]
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
                    f"Gradient of Parameter `{param.name}` on context {w_nd.context} has not been updated "
                    "by backward since last `step`.")
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
