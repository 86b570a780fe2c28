"""Lets MXNet's own ONNX importer read the ONNX files MXNet's own exporter writes.

MXNet 1.9.1 exports at ONNX opset 13 or later, and its importer
(`mxnet.contrib.onnx.import_model` / `import_to_gluon`, the calls SageMaker's MXNet
examples make in `model_fn`) rejects three patterns of those exports, all in Coach's
`-onnx` export of every policy network:

* a `Dense(flatten=False)` layer becomes `Flatten(axis=-1) -> Gemm -> Reshape(shape=
  Concat(Slice(Shape(x)), [units]))`: "Flatten operator only supports axis=1", and a
  Reshape whose target shape is computed instead of constant;
* `Squeeze`/`Unsqueeze` (the PPO value head) take their axes as a second input (an
  initializer, opset 13+), where the importer reads only the `axes` attribute (opset 11).

`normalize_graph` rewrites those into what the importer accepts, using ONNX's static shape
inference (Coach's exporter fixes the input shape, batch 1):

* `Flatten(axis=-1)` on a rank-r input becomes `Flatten(axis=r-1)`;
* a `Reshape` with a computed target becomes one with a constant target, whose first
  (batch) dimension is -1 so that batches of any size still work;
* `Squeeze`/`Unsqueeze` with constant axes get them as the attribute;

then drops the nodes nobody reads any more (the Shape/Slice/Concat chains). Shape
inference ignores the shapes the graph declares for its outputs: the public
`sagemaker_rl.onnx_utils.fix_onnx_model` declares PPO's outputs without the batch axis,
which would contradict the inferred ones. Graphs without these patterns pass through
untouched. `install()` hooks the rewrite into the importer, so user scripts that call
`import_model` or `import_to_gluon` run unmodified.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_installed = False
_AXES_OPS = ("Squeeze", "Unsqueeze")


def normalize_graph(graph, opset_version: int):
    """A copy of `graph` (onnx.GraphProto) with the exporter's patterns rewritten, or `graph` itself."""
    import onnx

    initializers = {init.name: init for init in graph.initializer}
    if not any(_needs_rewrite(node, initializers) for node in graph.node):
        return graph
    shapes = _inferred_shapes(graph, opset_version)
    new_graph = onnx.GraphProto()
    new_graph.CopyFrom(graph)
    rewritten = 0
    for node in new_graph.node:
        if node.op_type == "Flatten":
            rewritten += _fix_flatten_axis(node, shapes)
        elif node.op_type == "Reshape":
            rewritten += _constant_reshape_target(node, new_graph, initializers, shapes)
        elif node.op_type in _AXES_OPS:
            rewritten += _axes_input_to_attribute(node, initializers)
    if not rewritten:
        return graph
    _drop_dead_nodes(new_graph)
    log.info("ONNX graph: rewrote %d node(s) the MXNet importer cannot read", rewritten)
    return new_graph


def _needs_rewrite(node, initializers) -> bool:
    if node.op_type == "Flatten":
        return _axis(node) not in (None, 1)
    if node.op_type == "Reshape":
        return len(node.input) > 1 and node.input[1] not in initializers
    if node.op_type in _AXES_OPS:
        return len(node.input) > 1 and node.input[1] in initializers
    return False


def _inferred_shapes(graph, opset_version: int) -> dict[str, list[int]]:
    """Static shapes of the graph's values, from inference that ignores declared output shapes."""
    import onnx
    from onnx import helper, shape_inference

    probe = onnx.GraphProto()
    probe.CopyFrom(graph)
    for output in probe.output:
        output.type.tensor_type.ClearField("shape")
    model = helper.make_model(probe, opset_imports=[helper.make_opsetid("", opset_version)])
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:  # noqa: BLE001 - best effort: the importer then reports its own error
        log.warning("ONNX shape inference failed (%s); Flatten and Reshape nodes stay as they are", error)
        return {}
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    return shapes


def _fix_flatten_axis(node, shapes) -> int:
    axis = _axis(node)
    rank = len(shapes.get(node.input[0], []))
    if axis is None or axis >= 0 or not rank:
        return 0
    for attribute in node.attribute:
        if attribute.name == "axis":
            attribute.i = rank + axis
    return 1


def _constant_reshape_target(node, graph, initializers, shapes) -> int:
    import onnx
    from onnx import helper, numpy_helper

    if len(node.input) < 2 or node.input[1] in initializers:
        return 0
    target = shapes.get(node.output[0])
    if not target:
        return 0
    name = f"{node.output[0]}_smrl_const_shape"
    constant = [-1] + list(target[1:])
    graph.initializer.append(numpy_helper.from_array(_int64_array(constant), name))
    # The importer only sees initializers that are also listed as graph inputs.
    graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [len(constant)]))
    node.input[1] = name
    return 1


def _axes_input_to_attribute(node, initializers) -> int:
    from onnx import helper, numpy_helper

    if len(node.input) < 2 or node.input[1] not in initializers:
        return 0
    axes = [int(a) for a in numpy_helper.to_array(initializers[node.input[1]]).ravel()]
    del node.input[1:]
    node.attribute.append(helper.make_attribute("axes", axes))
    return 1


def install() -> None:
    """Hook `normalize_graph` into MXNet's ONNX importer (idempotent)."""
    global _installed
    if _installed:
        return
    from mxnet.contrib.onnx.onnx2mx import import_onnx

    original = import_onnx.GraphProto.from_onnx

    def from_onnx(self, graph, opset_version):
        return original(self, normalize_graph(graph, opset_version), opset_version)

    from_onnx.__doc__ = original.__doc__
    import_onnx.GraphProto.from_onnx = from_onnx
    _installed = True


def _axis(node):
    for attribute in node.attribute:
        if attribute.name == "axis":
            return attribute.i
    return None


def _int64_array(values):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def _drop_dead_nodes(graph) -> None:
    """Removes nodes (and initializers) that no graph output depends on any more."""
    needed = {output.name for output in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(output in needed for output in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    del graph.node[:]
    graph.node.extend(keep)
    live_initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live_initializers)
    live_inputs = [value for value in graph.input if value.name in needed]
    del graph.input[:]
    graph.input.extend(live_inputs)
