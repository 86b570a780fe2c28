"""The default `model_fn`: load the policy the training image exported.

Preferred: the MXNet symbol + params pair (`model-symbol.json`, `model-NNNN.params`)
loaded as a Gluon SymbolBlock, which takes any batch size. Fallback: `model.onnx`
through MXNet's ONNX importer (with `onnx_compat` so Coach's export imports).

The input names and per-observation shape come from `model-signature.json` (written by
the training image), the classic SageMaker `model-shapes.json`, or the ONNX graph; the
default input_fn checks requests against them.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import smrl_contract as contract

log = logging.getLogger(__name__)
# SymbolBlock.imports warns that it cannot infer the input's dtype; float32 is what we feed.
warnings.filterwarnings("ignore", message="Cannot decide type for the following arguments")


@dataclass(frozen=True)
class Signature:
    """What the network takes and gives. `observation_shape` excludes the batch axis."""

    input_names: list[str]
    observation_shape: tuple[int, ...] | None
    output_names: list[str] = field(default_factory=list)
    source: str = "none"


def read_signature(model_dir: Path) -> Signature:
    """The model's input signature from whichever file the archive has (empty if none)."""
    signature_file = model_dir / contract.SIGNATURE_FILE
    if signature_file.is_file():
        document = json.loads(signature_file.read_text())
        inputs = document.get("inputs") or []
        return Signature([i["name"] for i in inputs], _observation_shape(inputs),
                         list(document.get("outputs") or []), contract.SIGNATURE_FILE)
    shapes_file = model_dir / contract.LEGACY_SHAPES_FILE
    if shapes_file.is_file():
        inputs = json.loads(shapes_file.read_text())
        return Signature([i["name"] for i in inputs], _observation_shape(inputs), [], contract.LEGACY_SHAPES_FILE)
    onnx_file = model_dir / contract.ONNX_FILE
    if onnx_file.is_file():
        return _onnx_signature(onnx_file)
    return Signature([], None)


def _observation_shape(inputs: list[dict]) -> tuple[int, ...] | None:
    if len(inputs) != 1 or not inputs[0].get("shape"):
        return None
    return tuple(int(d) for d in inputs[0]["shape"][1:])


def _onnx_signature(onnx_file: Path) -> Signature:
    import onnx

    graph = onnx.load(str(onnx_file), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in weights]
    shape = None
    if len(inputs) == 1:
        dims = inputs[0].type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims[1:]):
            shape = tuple(d.dim_value for d in dims[1:])
    return Signature([v.name for v in inputs], shape, [v.name for v in graph.output], contract.ONNX_FILE)


def load_model(model_dir: Path):
    """A callable Gluon block for the exported policy in `model_dir`."""
    import mxnet as mx
    from mxnet import gluon

    model_dir = Path(model_dir)
    symbol_file = model_dir / contract.SYMBOL_FILE
    params = sorted(model_dir.glob(contract.PARAMS_GLOB))
    context = mx.cpu()
    if symbol_file.is_file() and params:
        signature = read_signature(model_dir)
        input_names = signature.input_names or _symbol_inputs(symbol_file, params[-1])
        # Last epoch wins; the training image writes exactly one (model-0000.params).
        block = gluon.SymbolBlock.imports(str(symbol_file), input_names, str(params[-1]), ctx=context)
        source = f"{symbol_file.name} + {params[-1].name}"
    elif (model_dir / contract.ONNX_FILE).is_file():
        from mxnet.contrib import onnx as onnx_mxnet

        from smrl_serving import onnx_compat

        onnx_compat.install()
        block = onnx_mxnet.import_to_gluon(str(model_dir / contract.ONNX_FILE), context)
        source = contract.ONNX_FILE
    else:
        found = ", ".join(sorted(p.name for p in model_dir.iterdir())) if model_dir.is_dir() else "(no such folder)"
        raise FileNotFoundError(
            f"No model in {model_dir}: expected {contract.SYMBOL_FILE} + {contract.PARAMS_GLOB} "
            f"or {contract.ONNX_FILE} (found: {found}). Define model_fn in your inference script "
            "to load anything else.")
    # A cached graph skips Python-side dispatch per layer: ~2x faster for tiny policies.
    block.hybridize(static_alloc=True)
    log.info("model loaded from %s", source)
    return block


def _symbol_inputs(symbol_file: Path, params_file: Path) -> list[str]:
    """Symbol inputs that are not parameters: the data inputs (when no signature says so)."""
    import mxnet as mx

    symbol = mx.sym.load(str(symbol_file))
    saved = {name.split(":", 1)[-1] for name in mx.nd.load(str(params_file))}
    return [name for name in symbol.list_inputs() if name not in saved]
