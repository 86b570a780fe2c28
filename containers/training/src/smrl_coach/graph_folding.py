"""Operators that compute the identity, folded out of an MXNet graph (its JSON form).

Coach's networks carry operators that leave their input unchanged with the presets'
settings, and on 32x512 activations MXNet's scalar elementwise kernels make them cost
more than the network's matrix products (~235 us of a ~490 us DQN step here):
- the vector embedder's input scaling, x / rescaling - offset, with rescaling 1, offset 0;
- ScaledGradHead's gradient rescaling, (1 - s) * BlockGrad(x) + s * x, with s = 1 (the
  head's `rescale_gradient_from_head_by_factor`, a constant): forward x, backward the
  incoming gradient times 1.
The bound graphs skip them. Bit for bit the same values and gradients for every finite x
(0 * x + x is x only when x is finite; an infinite activation would give NaN in stock
Coach and inf here: training has diverged either way).

Pure: works on the dict of `json.loads(symbol.tojson())` (nodes in topological order,
op "null" for variables, inputs as [node, output, version] entries, scalars as strings
in "attrs"), so it runs and is tested without MXNet.
"""
from __future__ import annotations

import numpy as np

Entry = list[int]   # [node index, output index, version]

# operator -> the "scalar" attribute that makes it the identity
IDENTITY_SCALAR_OPS = {"_div_scalar": 1.0, "_mul_scalar": 1.0, "_minus_scalar": 0.0, "_plus_scalar": 0.0}


def fold_identity_ops(graph: dict, constants: dict[str, np.ndarray]) -> dict:
    """`graph` without the operators that compute the identity for these constant values.

    `constants`: the values of the graph's constant (grad_req null) parameters, by
    variable name. Returns a new graph whose consumers of a folded operator read its
    input, without the nodes that no head reaches any more; or `graph` itself when there
    is nothing to fold. `graph` is not modified.
    """
    alias = _identities(graph["nodes"], constants)
    if not alias:
        return graph
    return _rewired(graph, alias)


def _resolve(alias: dict[int, Entry], entry: Entry) -> Entry:
    """The entry a consumer of `entry` reads once the aliased nodes are gone."""
    while entry[0] in alias and entry[1] == 0:
        entry = alias[entry[0]]
    return entry


def _scalar_is(node: dict, value: float) -> bool:
    try:
        return float(node.get("attrs", {}).get("scalar", "nan")) == value
    except ValueError:
        return False


def _identities(nodes: list[dict], constants: dict[str, np.ndarray]) -> dict[int, Entry]:
    """node index -> the input entry it passes through unchanged (in topological order, so
    an identity may feed another)."""
    alias: dict[int, Entry] = {}
    for index, node in enumerate(nodes):
        op, inputs = node["op"], node.get("inputs", [])
        if op in IDENTITY_SCALAR_OPS and _scalar_is(node, IDENTITY_SCALAR_OPS[op]):
            alias[index] = inputs[0]
        elif op == "elemwise_add" and len(inputs) == 2:
            x = _scaled_grad_input(nodes, alias, constants, inputs)
            if x is not None:
                alias[index] = x
    return alias


def _scaled_grad_input(nodes: list[dict], alias: dict[int, Entry], constants: dict[str, np.ndarray],
                       summands: list[Entry]) -> Entry | None:
    """x when the two summands are (1 - s) * BlockGrad(x) and s * x, in either order, with
    s a constant equal to [1.0]; otherwise None."""

    def producer(entry: Entry, op: str) -> dict | None:
        node = nodes[_resolve(alias, entry)[0]]
        return node if node["op"] == op else None

    def is_one(entry: Entry) -> bool:
        node = nodes[_resolve(alias, entry)[0]]
        value = constants.get(node["name"]) if node["op"] == "null" else None
        return value is not None and value.shape == (1,) and value[0] == 1.0

    for blocked_entry, scaled_entry in (summands, summands[::-1]):
        blocked, scaled = producer(blocked_entry, "broadcast_mul"), producer(scaled_entry, "broadcast_mul")
        if blocked is None or scaled is None:
            continue
        one_minus_s, block = (producer(e, kind) for e, kind in zip(blocked["inputs"], ("_rminus_scalar", "BlockGrad")))
        s, x = (_resolve(alias, e) for e in scaled["inputs"])
        if one_minus_s is not None and block is not None and _scalar_is(one_minus_s, 1.0) \
                and _resolve(alias, one_minus_s["inputs"][0]) == s and is_one(s) \
                and _resolve(alias, block["inputs"][0]) == x:
            return x
    return None


def _rewired(graph: dict, alias: dict[int, Entry]) -> dict:
    """The graph with every entry resolved through `alias`, keeping what the heads still
    reach in the original (topological) order, renumbered."""
    nodes = graph["nodes"]
    reached, stack = set(), [_resolve(alias, h)[0] for h in graph["heads"]]
    while stack:
        index = stack.pop()
        if index not in reached:
            reached.add(index)
            stack.extend(_resolve(alias, e)[0] for e in nodes[index].get("inputs", []))
    order = sorted(reached)
    renumber = {old: new for new, old in enumerate(order)}

    def remap(entry: Entry) -> Entry:
        entry = _resolve(alias, entry)
        return [renumber[entry[0]], entry[1]] + entry[2:]

    new_nodes = []
    for old in order:
        node = dict(nodes[old])
        node["inputs"] = [remap(e) for e in node.get("inputs", [])]
        new_nodes.append(node)
    return {"nodes": new_nodes, "arg_nodes": [i for i, n in enumerate(new_nodes) if n["op"] == "null"],
            "heads": [remap(h) for h in graph["heads"]], "attrs": graph.get("attrs", {})}
