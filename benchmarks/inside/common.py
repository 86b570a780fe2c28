"""Shared by the bench scripts that run inside the images (mounted at /opt/bench).

Each script measures in-process, so container start-up and interpreter imports stay
out of its figures, and prints one JSON line marked with MARKER as its last output: the
host side (benchmarks/harness.py) finds it among whatever else the run printed (Coach
prints a lot).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

MARKER = "SMRL-BENCH-JSON "


def environment_info() -> dict[str, Any]:
    """What a figure depends on besides the code: MXNet build, variant, threads, CPUs."""
    import mxnet as mx

    cpus = len(os.sched_getaffinity(0))
    omp = os.environ.get("OMP_NUM_THREADS")
    return {
        "mxnet_version": mx.__version__,
        "variant": os.environ.get("SMRL_IMAGE_VARIANT", "unknown"),
        # MXNet's default OpenMP pool is one thread per CPU the process may use.
        "threads": f"OMP_NUM_THREADS={omp}" if omp else f"default ({cpus} CPUs)",
        "cpus": cpus,
    }


def context(name: str):
    """The MXNet context for --ctx: mx.gpu(0) for the GPU image, else the CPU."""
    import mxnet as mx

    return mx.gpu(0) if name == "gpu" else mx.cpu()


def timed_loop(step: Callable[[], None], seconds: float, warmup_seconds: float, chunk: int,
               finish: Callable[[], None] | None = None) -> tuple[int, float]:
    """Calls `step` in chunks until `seconds` have passed, after an untimed warm-up.

    Checking the clock once per chunk keeps timer overhead out of sub-microsecond steps.
    `finish` (e.g. MXNet's waitall: its engine runs asynchronously) runs before each
    clock read, so that no queued work is counted as done. Returns (calls, elapsed seconds).
    """
    deadline = time.perf_counter() + warmup_seconds
    while time.perf_counter() < deadline:
        for _ in range(chunk):
            step()
    if finish:
        finish()
    calls = 0
    started = time.perf_counter()
    while True:
        for _ in range(chunk):
            step()
        calls += chunk
        if finish:
            finish()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return calls, elapsed


def emit(result: dict[str, Any]) -> None:
    """Prints the result line the host parses (always last, always flushed)."""
    print(MARKER + json.dumps(result), flush=True)
