"""MXNet's arrays and numbers as numpy sees them: shared-memory views, parsed floats.

mxnet is imported inside the functions: smrl_coach.fast_coach imports this module while
rl_coach is being imported, before it has chosen MXNet's engine (configure_engine).
"""
from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

import numpy as np


def np_view(array: Any) -> np.ndarray:
    """A numpy array that shares memory with a float32/float64 CPU NDArray (no copy).

    Only valid while the NDArray lives and while no MXNet operator on it is pending:
    callers wait for the engine first (with the NaiveEngine nothing is ever pending).
    """
    import mxnet as mx
    c_type = {np.dtype(np.float32): ctypes.c_float, np.dtype(np.float64): ctypes.c_double}[np.dtype(array.dtype)]
    assert array.context.device_type == "cpu" and array.stype == "default"
    ptr = ctypes.c_void_p()
    mx.base.check_call(mx.base._LIB.MXNDArrayGetData(array.handle, ctypes.byref(ptr)))
    buffer = (c_type * array.size).from_address(ptr.value)
    return np.ctypeslib.as_array(buffer).reshape(array.shape)


def mx_float(values: Sequence[float]) -> np.ndarray:
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
