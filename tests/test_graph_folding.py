"""Folding the operators that compute the identity out of an MXNet graph, on the host.

`smrl_coach.graph_folding` works on the JSON form of a symbol (`json.loads(symbol.tojson())`)
and needs neither MXNet nor Coach: these tests build small graphs the way MXNet writes them
(op "null" for variables, inputs as [node, output, version] entries, scalars as strings in
"attrs"). The training image's fast path binds the folded graphs;
tests/fixtures/training_speed/check_fast_path.py checks there that Coach's DQN graph loses
these operators and still trains bit for bit as stock Coach.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smrl_coach.graph_folding import fold_identity_ops

TRAINING_SRC = Path(__file__).resolve().parent.parent / "containers" / "training" / "src"
ONE = np.array([1.0], dtype=np.float32)


class Graph:
    """Builds a symbol's JSON graph node by node, in topological order, as MXNet writes it."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []

    def var(self, name: str) -> list[int]:
        return self._add({"op": "null", "name": name, "inputs": []})

    def op(self, op: str, *inputs: list[int], name: str | None = None, **attrs) -> list[int]:
        node = {"op": op, "name": name or f"{op}{len(self.nodes)}", "inputs": [list(e) for e in inputs]}
        if attrs:
            node["attrs"] = {key: str(value) for key, value in attrs.items()}
        return self._add(node)

    def _add(self, node: dict) -> list[int]:
        self.nodes.append(node)
        return [len(self.nodes) - 1, 0, 0]

    def json(self, *heads: list[int]) -> dict:
        return {"nodes": self.nodes, "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
                "node_row_ptr": list(range(len(self.nodes) + 1)), "heads": [list(h) for h in heads],
                "attrs": {"mxnet_version": ["int", 10901]}}


def ops(graph: dict) -> list[str]:
    return [node["op"] for node in graph["nodes"]]


def names(graph: dict) -> list[str]:
    return [node["name"] for node in graph["nodes"]]


def inputs_of(graph: dict, name: str) -> list[str]:
    """The names of the nodes that the node called `name` reads."""
    nodes = graph["nodes"]
    (node,) = [n for n in nodes if n["name"] == name]
    return [nodes[entry[0]]["name"] for entry in node["inputs"]]


def head_names(graph: dict) -> list[str]:
    return [graph["nodes"][entry[0]]["name"] for entry in graph["heads"]]


def dense(g: Graph, x: list[int], name: str) -> list[int]:
    return g.op("FullyConnected", x, g.var(f"{name}_weight"), name=name, num_hidden=4, no_bias=True)


def scaled_grad(g: Graph, x: list[int], scale: str, scaled_first: bool = False, one: float = 1.0) -> list[int]:
    """ScaledGradHead's (1 - s) * BlockGrad(x) + s * x, with s the variable `scale`."""
    s = g.var(scale)
    blocked = g.op("broadcast_mul", g.op("_rminus_scalar", s, scalar=one), g.op("BlockGrad", x))
    scaled = g.op("broadcast_mul", s, x)
    return g.op("elemwise_add", *((scaled, blocked) if scaled_first else (blocked, scaled)))


# -- arithmetic with a scalar -------------------------------------------------------------

def test_a_division_by_one_is_removed_and_its_consumers_read_the_input():
    g = Graph()
    data = g.var("data")
    graph = g.json(dense(g, g.op("_div_scalar", data, scalar=1.0), "fc"))

    folded = fold_identity_ops(graph, {})

    assert "_div_scalar" not in ops(folded)
    assert inputs_of(folded, "fc") == ["data", "fc_weight"]


@pytest.mark.parametrize("op,scalar", [("_div_scalar", 1.0), ("_mul_scalar", 1.0),
                                       ("_minus_scalar", 0.0), ("_plus_scalar", 0.0)])
def test_each_scalar_operator_that_leaves_its_input_unchanged_is_removed(op, scalar):
    g = Graph()
    graph = g.json(dense(g, g.op(op, g.var("data"), scalar=scalar), "fc"))

    folded = fold_identity_ops(graph, {})

    assert ops(folded) == ["null", "null", "FullyConnected"]
    assert inputs_of(folded, "fc") == ["data", "fc_weight"]


def test_the_vector_embedders_input_scaling_by_one_minus_zero_is_removed_as_a_whole():
    # Coach's embedder: x / rescaling - offset, with rescaling 1 and offset 0
    g = Graph()
    scaled = g.op("_minus_scalar", g.op("_div_scalar", g.var("data"), scalar="1.0"), scalar="0.0")
    graph = g.json(dense(g, scaled, "fc"))

    folded = fold_identity_ops(graph, {})

    assert inputs_of(folded, "fc") == ["data", "fc_weight"]
    assert names(folded) == ["data", "fc_weight", "fc"]


@pytest.mark.parametrize("op,scalar", [("_div_scalar", 255.0), ("_mul_scalar", 0.5), ("_minus_scalar", 1.0),
                                       ("_plus_scalar", 1e-8), ("_rminus_scalar", 0.0), ("_rdiv_scalar", 1.0)])
def test_a_scalar_operator_that_changes_its_input_is_kept(op, scalar):
    g = Graph()
    graph = g.json(dense(g, g.op(op, g.var("data"), scalar=scalar), "fc"))
    before = copy.deepcopy(graph)

    assert fold_identity_ops(graph, {}) is graph   # nothing to fold: the very same graph
    assert graph == before


def test_a_scalar_attribute_that_is_not_a_number_keeps_the_operator():
    g = Graph()
    graph = g.json(dense(g, g.op("_div_scalar", g.var("data"), scalar="one"), "fc"))

    assert fold_identity_ops(graph, {}) is graph


# -- ScaledGradHead's gradient rescaling ----------------------------------------------------

@pytest.mark.parametrize("scaled_first", [False, True], ids=["blocked-first", "scaled-first"])
def test_a_gradient_rescaling_by_a_constant_one_becomes_its_input(scaled_first):
    g = Graph()
    hidden = dense(g, g.var("data"), "hidden")
    graph = g.json(dense(g, scaled_grad(g, hidden, "head_scale", scaled_first), "head"))

    folded = fold_identity_ops(graph, {"head_scale": ONE})

    assert inputs_of(folded, "head") == ["hidden", "head_weight"]
    assert not {"elemwise_add", "broadcast_mul", "BlockGrad", "_rminus_scalar"} & set(ops(folded))
    # the factor is no longer an argument of the graph
    assert "head_scale" not in names(folded)


def test_a_gradient_rescaling_by_another_constant_is_kept():
    g = Graph()
    graph = g.json(dense(g, scaled_grad(g, dense(g, g.var("data"), "hidden"), "head_scale"), "head"))

    assert fold_identity_ops(graph, {"head_scale": np.array([0.5], dtype=np.float32)}) is graph


def test_a_gradient_rescaling_whose_factor_is_trained_is_kept():
    # only constant (grad_req null) parameters are passed as constants
    g = Graph()
    graph = g.json(dense(g, scaled_grad(g, dense(g, g.var("data"), "hidden"), "head_scale"), "head"))

    assert fold_identity_ops(graph, {}) is graph


def test_a_gradient_rescaling_whose_factor_is_not_a_single_one_is_kept():
    g = Graph()
    graph = g.json(dense(g, scaled_grad(g, dense(g, g.var("data"), "hidden"), "head_scale"), "head"))

    assert fold_identity_ops(graph, {"head_scale": np.ones(2, dtype=np.float32)}) is graph


def test_a_sum_whose_blocked_factor_is_not_one_minus_the_scale_is_kept():
    # (2 - s) * BlockGrad(x) + s * x is 2 * x forward when s == 1
    g = Graph()
    graph = g.json(dense(g, scaled_grad(g, dense(g, g.var("data"), "hidden"), "head_scale", one=2.0), "head"))

    assert fold_identity_ops(graph, {"head_scale": ONE}) is graph


def test_a_sum_that_blocks_one_tensor_and_scales_another_is_kept():
    # (1 - s) * BlockGrad(x) + s * y is not y, even with s == 1 (its gradient reaches y only)
    g = Graph()
    x, y = dense(g, g.var("data"), "x"), dense(g, g.var("other"), "y")
    s = g.var("head_scale")
    blocked = g.op("broadcast_mul", g.op("_rminus_scalar", s, scalar=1.0), g.op("BlockGrad", x))
    graph = g.json(g.op("elemwise_add", blocked, g.op("broadcast_mul", s, y)))

    assert fold_identity_ops(graph, {"head_scale": ONE}) is graph


def test_a_plain_sum_of_two_tensors_is_kept():
    g = Graph()
    graph = g.json(g.op("elemwise_add", dense(g, g.var("data"), "x"), dense(g, g.var("other"), "y")))

    assert fold_identity_ops(graph, {}) is graph


# -- the folded graph ----------------------------------------------------------------------

def test_an_output_that_is_itself_an_identity_becomes_its_input():
    g = Graph()
    graph = g.json(g.op("_mul_scalar", dense(g, g.var("data"), "fc"), scalar=1.0))

    folded = fold_identity_ops(graph, {})

    assert head_names(folded) == ["fc"]
    assert names(folded) == ["data", "fc_weight", "fc"]


def test_the_folded_graph_is_renumbered_in_topological_order_with_its_variables_as_arg_nodes():
    g = Graph()
    hidden = dense(g, g.op("_div_scalar", g.var("data"), scalar=1.0), "hidden")
    halves = g.op("SliceChannel", scaled_grad(g, hidden, "head_scale"), name="halves", num_outputs=2, axis=1)
    second_half = [halves[0], 1, 0]
    graph = g.json(dense(g, second_half, "head"), hidden)

    folded = fold_identity_ops(graph, {"head_scale": ONE})

    nodes = folded["nodes"]
    assert names(folded) == ["data", "hidden_weight", "hidden", "halves", "head_weight", "head"]
    assert all(entry[0] < index for index, node in enumerate(nodes) for entry in node["inputs"])
    assert folded["arg_nodes"] == [i for i, node in enumerate(nodes) if node["op"] == "null"]
    # an entry keeps its output index and version; heads keep their order
    (head,) = [node for node in nodes if node["name"] == "head"]
    assert head["inputs"][0] == [names(folded).index("halves"), 1, 0]
    assert head_names(folded) == ["head", "hidden"]
    assert folded["attrs"] == graph["attrs"]


def test_folding_leaves_the_given_graph_unchanged():
    g = Graph()
    hidden = dense(g, g.op("_div_scalar", g.var("data"), scalar=1.0), "hidden")
    graph = g.json(dense(g, scaled_grad(g, hidden, "head_scale"), "head"))
    before = copy.deepcopy(graph)

    fold_identity_ops(graph, {"head_scale": ONE})

    assert graph == before


def test_the_module_imports_without_mxnet_or_coach():
    # None in sys.modules makes any import of that package fail
    code = ("import sys; sys.modules['mxnet'] = None; sys.modules['rl_coach'] = None; "
            f"sys.path.insert(0, {str(TRAINING_SRC)!r}); import smrl_coach.graph_folding")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
