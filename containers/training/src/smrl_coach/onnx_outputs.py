"""Orders the outputs of Coach's ONNX export the way SageMaker RL's own helpers read them.

MXNet 1.3 (AWS's Coach MXNet image) exported a multi-head network with one graph output:
the node it computed last, which is the policy head (PPO's softmax or Gaussian, DQN's Q
values). The public `sagemaker_rl.onnx_utils.fix_onnx_model` tells the agent from
`graph.output[0]` and then declares every head itself. MXNet 1.9.1 exports all heads,
value head first, and the helper then raises "Can't determine the RL Agent used". Putting
the output of the last computed node first gives the helper what it was written for,
keeps every head, and leaves exports with one output unchanged.
"""
from __future__ import annotations

from pathlib import Path

import onnx


def put_last_computed_output_first(path: str | Path) -> bool:
    """Rewrites the ONNX file at `path` in place; True when its outputs were reordered."""
    model = onnx.load(str(path))
    graph = model.graph
    if len(graph.output) < 2 or not graph.node:
        return False
    last_computed = set(graph.node[-1].output)
    ordered = sorted(graph.output, key=lambda value: value.name not in last_computed)
    if [v.name for v in ordered] == [v.name for v in graph.output]:
        return False
    copies = [onnx.ValueInfoProto.FromString(v.SerializeToString()) for v in ordered]
    del graph.output[:]
    graph.output.extend(copies)
    onnx.save(model, str(path))
    return True
