"""Writes the trained policy network to /opt/ml/model for serving.

Two forms, both of the final weights: `model.onnx` (Coach's own ONNX export of the
latest checkpoint, input fixed at batch 1) and MXNet's `model-symbol.json` +
`model-0000.params`, loadable with `gluon.SymbolBlock.imports` at any batch size.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import gluon
from rl_coach.architectures.mxnet_components.savers import OnnxSaver

from smrl_contract import ONNX_FILE, PARAMS_FILE, REFERENCE_FILE, SIGNATURE_FILE, SYMBOL_FILE

_CHECKPOINT_ID = re.compile(r"^(\d+)_Step-\d+\.ckpt\.")


def policy_network(graph_manager: Any) -> Any:
    """The online network of the first agent's main network wrapper (the policy that acts)."""
    for level in graph_manager.level_managers:
        for agent in level.agents.values():
            wrapper = agent.networks.get("main") or next(iter(agent.networks.values()))
            return wrapper.online_network
    raise RuntimeError("The graph manager holds no agent with a network to export.")


def export_onnx(checkpoint_dir: Path, model_dir: Path, network_name: str) -> Path | None:
    """Copies the newest checkpoint's ONNX file of `network_name` to model_dir/model.onnx.

    Copied, not moved: the checkpoint stays complete for resuming.
    """
    wanted = f".{network_name.replace('/', '.')}.onnx"
    candidates = [
        (int(m.group(1)), p)
        for p in checkpoint_dir.glob("*.onnx")
        if p.name.endswith(wanted) and (m := _CHECKPOINT_ID.match(p.name))
    ]
    if not candidates:
        return None
    _, newest = max(candidates)
    target = model_dir / ONNX_FILE
    shutil.copyfile(newest, target)
    return target


def export_mxnet(network: Any, model_dir: Path) -> list[Path]:
    """Saves the network as an MXNet symbol + params pair, plus its input/output names."""
    input_shapes = network._model_input_shapes()
    # The same symbolic graph Coach builds for its ONNX export (inputs Data0..DataN).
    symbol = OnnxSaver._get_onnx_sym(network.model, len(input_shapes))
    params = network.model.collect_params()
    arg_names = set(symbol.list_arguments())
    aux_names = set(symbol.list_auxiliary_states())
    saved = {}
    for name, param in params.items():
        prefix = "arg" if name in arg_names else "aux" if name in aux_names else None
        if prefix:
            saved[f"{prefix}:{name}"] = param._reduce()
    symbol.save(str(model_dir / SYMBOL_FILE))
    mx.nd.save(str(model_dir / PARAMS_FILE), saved)
    signature = {
        "inputs": [{"name": f"Data{i}", "shape": list(shape)} for i, shape in enumerate(input_shapes)],
        "outputs": symbol.list_outputs(),
        "framework": f"mxnet-{mx.__version__}",
    }
    (model_dir / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2))
    return [model_dir / SYMBOL_FILE, model_dir / PARAMS_FILE, model_dir / SIGNATURE_FILE]


def export_reference_predictions(network: Any, model_dir: Path, count: int = 8, seed: int = 0) -> Path:
    """Writes `count` random observations and what Coach's own predict() answers for them."""
    embedders = [emb.embedder_name for emb in network.model.nets[0].input_embedders]
    rng = np.random.default_rng(seed)
    inputs = {
        name: rng.normal(size=(count, *shape[1:])).astype(np.float32)
        for name, shape in zip(embedders, network._model_input_shapes())
    }
    outputs = network.predict(inputs, squeeze_output=False)
    reference = {
        "inputs": {name: value.tolist() for name, value in inputs.items()},
        "outputs": [np.asarray(value).tolist() for value in outputs],
    }
    target = model_dir / REFERENCE_FILE
    target.write_text(json.dumps(reference))
    return target


def load_mxnet(model_dir: Path) -> gluon.SymbolBlock:
    """Loads what export_mxnet wrote (used by tests and the serving side)."""
    signature = json.loads((model_dir / SIGNATURE_FILE).read_text())
    inputs = [item["name"] for item in signature["inputs"]]
    return gluon.SymbolBlock.imports(str(model_dir / SYMBOL_FILE), inputs, str(model_dir / PARAMS_FILE))
