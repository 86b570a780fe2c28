"""Lets MXNet's own ONNX importer read the ONNX files MXNet's own exporter writes.

MXNet 1.9.1 exports a `Dense(flatten=False)` layer as
`Flatten(axis=-1) -> Gemm -> Reshape(shape=Concat(Slice(Shape(x)), [units]))`, and its
importer (`mxnet.contrib.onnx.import_model` / `import_to_gluon`, the calls SageMaker's
MXNet examples make in `model_fn`) rejects both halves: "Flatten operator only supports
axis=1", and a Reshape whose target shape is computed instead of constant. Coach's
`-onnx` export of every policy network hits this.

`normalize_graph` rewrites those two patterns into what the importer accepts, using
ONNX's static shape inference (Coach's exporter fixes the input shape, batch 1):

* `Flatten(axis=-1)` on a rank-r input becomes `Flatten(axis=r-1)`;
* a `Reshape` with a computed target becomes one with a constant target, whose first
  (batch) dimension is -1 so that batches of any size still work;

then drops the nodes nobody reads any more (the Shape/Slice/Concat chains). Graphs
without these patterns pass through untouched. `install()` hooks the rewrite into the
importer, so user scripts that call `import_to_gluon` run unmodified.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_installed = False


def normalize_graph(graph, opset_version: int):
    """A copy of `graph` (onnx.GraphProto) with the exporter's patterns rewritten, or `graph` itself."""
    import onnx
    from onnx import helper, numpy_helper, shape_inference

    needs_rewrite = any(
        (node.op_type == "Flatten" and _axis(node) not in (None, 1))
        or node.op_type == "Reshape" for node in graph.node
    )
    if not needs_rewrite:
        return graph
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_version)])
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception as error:  # noqa: BLE001 - best effort: the importer then reports its own error
        log.warning("ONNX shape inference failed (%s); importing the graph as it is", error)
        return graph
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    initializers = {init.name for init in graph.initializer}

    new_graph = onnx.GraphProto()
    new_graph.CopyFrom(graph)
    rewritten = 0
    for node in new_graph.node:
        if node.op_type == "Flatten" and _axis(node) not in (None, 1):
            rank = len(shapes.get(node.input[0], []))
            axis = _axis(node)
            if rank and axis < 0:
                for attribute in node.attribute:
                    if attribute.name == "axis":
                        attribute.i = rank + axis
                rewritten += 1
        elif node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] not in initializers:
            target = shapes.get(node.output[0])
            if not target:
                continue
            name = f"{node.output[0]}_smrl_const_shape"
            constant = [-1] + list(target[1:])
            new_graph.initializer.append(numpy_helper.from_array(_int64_array(constant), name))
            # The importer only sees initializers that are also listed as graph inputs.
            new_graph.input.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [len(constant)]))
            node.input[1] = name
            rewritten += 1
    if not rewritten:
        return graph
    _drop_dead_nodes(new_graph)
    log.info("ONNX graph: rewrote %d node(s) the MXNet importer cannot read", rewritten)
    return new_graph


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
