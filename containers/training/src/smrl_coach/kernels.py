"""Compiled elementwise kernels for the fast path (numba), with a numpy fallback.

MXNet's adam_update operator and numpy's ufuncs both take one pass over memory per
arithmetic operation, and numpy's float32 sqrt is not vectorised: an Adam update of the
134k parameters of Coach's CartPole DQN network costs ~135 us with numpy (12 passes),
~22 us as one vectorised loop. The loop does the same float32 operations in the same
order as MXNet's AdamUpdateKernel (and as the numpy fallback), with no fused
multiply-add or reassociation (numba without fastmath), so the bits are the same.

numba is in the CPU image's lock. Compiled code is cached in NUMBA_CACHE_DIR (the image
sets it and fills the cache at build time, so a job does not compile). Without numba,
or with SMRL_COACH_KERNELS=numpy, the numpy version runs.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import numpy as np

ENV_VAR = "SMRL_COACH_KERNELS"


def _adam_numpy(w, g, mean, var, lr, b1, b2, c1, c2, eps, tmp, tmp2) -> None:
    # mean = beta1 * mean + (1 - beta1) * grad
    mean *= b1
    np.multiply(g, c1, out=tmp)
    mean += tmp
    # var = beta2 * var + (1 - beta2) * grad * grad
    var *= b2
    np.multiply(g, c2, out=tmp)
    np.multiply(tmp, g, out=tmp)
    var += tmp
    # weight = weight - lr * mean / (sqrt(var) + epsilon)
    np.sqrt(var, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.multiply(mean, lr, out=tmp2)
    np.divide(tmp2, tmp, out=tmp2)
    w -= tmp2


def _adam_loop(w, g, mean, var, lr, b1, b2, c1, c2, eps):
    for i in range(w.size):
        grad = g[i]
        m = b1 * mean[i] + c1 * grad
        v = b2 * var[i] + (c2 * grad) * grad
        mean[i] = m
        var[i] = v
        w[i] = w[i] - (m * lr) / (np.sqrt(v) + eps)


_SIGNATURE = "void(f4[::1], f4[::1], f4[::1], f4[::1], f4, f4, f4, f4, f4, f4)"


def _compile() -> Callable | None:
    if os.environ.get(ENV_VAR, "numba").strip().lower() == "numpy":
        return None
    try:
        import numba
    except ImportError:
        return None
    # error_model="numpy": division by zero gives inf/nan as numpy and MXNet do, instead of
    # Python's ZeroDivisionError check, which would keep the loop from being vectorised.
    options = dict(error_model="numpy", nogil=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", numba.NumbaWarning)
            return numba.njit(_SIGNATURE, cache=True, **options)(_adam_loop)
    except Exception:  # noqa: BLE001 - an unwritable cache: compile in memory instead
        return numba.njit(_SIGNATURE, cache=False, **options)(_adam_loop)


_compiled: Callable | None = None
_compiled_ready = False


def _kernel() -> Callable | None:
    global _compiled, _compiled_ready
    if not _compiled_ready:
        _compiled, _compiled_ready = _compile(), True
    return _compiled


def backend() -> str:
    """'numba' or 'numpy': what adam_update runs."""
    return "numba" if _kernel() is not None else "numpy"


def adam_update(w: np.ndarray, g: np.ndarray, mean: np.ndarray, var: np.ndarray, lr: np.float32,
                b1: np.float32, b2: np.float32, c1: np.float32, c2: np.float32, eps: np.float32,
                scratch: tuple) -> None:
    """MXNet's Adam step in place on flat contiguous float32 arrays (c1 = 1 - b1, c2 = 1 - b2;
    all scalars float32). `scratch`: two float32 arrays of w's size (numpy fallback only)."""
    kernel = _kernel()
    if kernel is None:
        _adam_numpy(w, g, mean, var, lr, b1, b2, c1, c2, eps, *scratch)
    else:
        kernel(w, g, mean, var, lr, b1, b2, c1, c2, eps)
