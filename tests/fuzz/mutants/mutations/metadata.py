"""Mutations of the metadata document as a JSON tree: graph input, nodes (op, name, inputs,
outputs, attrs, params, the list itself), preprocessing, labels, the tensor list, unknown
keys. Each edit keeps the JSON writable; the section is re-encoded as it was (zlib or not)."""

from __future__ import annotations

import copy
import math

from engine.ops import OPS
from tests.fuzz.mutants.mutations.edits import INF, NAN, Mutation, noop

JSON_POOL = [0, 1, -1, 2, 3, 5, 2**24, 2**24 + 1, 2**31, 2**63, -2**63, 10**30, 1.0, 1.5, -0.0,
             1e308, NAN, INF, -INF, True, False, None, "1", "", "x" * 300, [], [1], [1, 1],
             [2, 1], [1, 2], [0, 0], [3, 3], [1, 2, 3], [[1, 1]], [True, 1], [1.0, 1], [-1, 1],
             [2**63, 1], [0, 1, 2, 3], [1, 1, 1, 1], {}, {"a": 1}]
ATTR_KEYS = ["stride", "padding", "kernel", "dilation", "groups", "start_dim", "axis",
             "ceil_mode", "pads", "kernel_size", "end_dim", "count_include_pad", "", "bias",
             "__class__", "STRIDE"]


def _meta(spec) -> dict:
    return spec.items[0].doc["metadata"]


def _nodes(spec) -> list:
    g = _meta(spec).get("graph", {})
    return g.get("nodes", []) if isinstance(g, dict) else []


def _json_value(d):
    v = d.choice(JSON_POOL)
    return copy.deepcopy(v)


def _finite_json(v) -> bool:
    """No NaN / Infinity anywhere in v (docs/FORMAT.md forbids them in the metadata)."""
    if isinstance(v, float):
        return math.isfinite(v)
    if isinstance(v, dict):
        return all(_finite_json(x) for x in v.values())
    if isinstance(v, list):
        return all(_finite_json(x) for x in v)
    return True


def m_attr_set(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    n = d.choice(nodes)
    attrs = n.setdefault("attrs", {})
    key = d.choice(sorted(attrs) + ATTR_KEYS if attrs and d.bool() else ATTR_KEYS)
    old = attrs.get(key, "<absent>")
    attrs[key] = _json_value(d)
    return f"node {n['name']!r}: attrs[{key!r}] {old!r} -> {attrs[key]!r}", False, False


def m_attr_del(d, spec, case):
    nodes = [n for n in _nodes(spec) if n.get("attrs")]
    if not nodes:
        return m_attr_set(d, spec, case)
    n = d.choice(nodes)
    key = d.choice(sorted(n["attrs"]))
    del n["attrs"][key]
    return f"node {n['name']!r}: attrs[{key!r}] deleted", False, False


def m_input_shape(d, spec, case):
    g = _meta(spec)["graph"]
    shape = g["input"]["shape"]
    how = d.choice(["elem", "elem", "len", "type", "grow"])
    old = list(shape)
    if how == "elem":
        shape[d.int(0, 2)] = d.choice([0, -1, 1, 2, 3, 17, 2**24, 2**31, 2**63, 1.0, True, "3",
                                       None])
    elif how == "len":
        g["input"]["shape"] = d.choice([[], shape[:2], shape + [1], [shape]])
    elif how == "type":
        g["input"]["shape"] = d.choice([None, "1,2,3", {"c": 1}, 3])
    else:  # another valid-looking size: may or may not chain through the graph
        i = d.int(1, 2)
        shape[i] = max(1, shape[i] + d.choice([-3, -1, 1, 2, 5, 100]))
    return f"graph.input.shape {old} -> {g['input']['shape']!r}", False, False


def m_node_io(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    g = _meta(spec)["graph"]
    n = d.choice(nodes)
    values = [g["input"]["name"]] + [m["outputs"][0] for m in nodes]
    key = d.choice(["inputs", "outputs"])
    old = n[key]
    n[key] = d.choice([[], [d.choice(values)], [d.choice(values)], old + old, ["nowhere"],
                       "v1", [1], None, [d.choice(values), "x"]])
    return f"node {n['name']!r}: {key} {old} -> {n[key]!r}", False, False


def m_node_op(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    n = d.choice(nodes)
    old = n["op"]
    n["op"] = d.choice(sorted(OPS) + ["", "Conv2d", "conv", "batchnorm", 1, None, ["relu"]])
    return f"node {n['name']!r}: op {old!r} -> {n['op']!r}", False, False


def m_node_params(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    n = d.choice(nodes)
    params = n.setdefault("params", {})
    names = list(case.tensors)
    how = d.choice(["point", "point", "delete", "rename", "add_bias", "type", "missing"])
    old = dict(params)
    if how == "point" and params:
        params[d.choice(sorted(params))] = d.choice(names)
    elif how == "delete" and params:
        del params[d.choice(sorted(params))]
    elif how == "rename" and params:
        role = d.choice(sorted(params))
        params[d.choice(["weights", "Weight", "bias2", "scale", ""])] = params.pop(role)
    elif how == "add_bias" and names:
        params["bias"] = d.choice(names)
    elif how == "type":
        if params:
            params[d.choice(sorted(params))] = d.choice([1, None, ["w"], {"a": 1}, True])
        else:
            n["params"] = d.choice([[], "w", None, 1])
    else:
        params[d.choice(["weight", "bias"])] = "no.such.tensor"
    return f"node {n['name']!r}: params {old} -> {n['params']!r}", False, False


def m_nodes_list(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    g = _meta(spec)["graph"]
    how = d.choice(["delete", "duplicate", "swap", "reverse", "insert_relu", "type"])
    if how == "delete":
        i = d.int(0, len(nodes) - 1)
        nodes.pop(i)
        return f"node {i} deleted", False, False
    if how == "duplicate":
        i = d.int(0, len(nodes) - 1)
        nodes.insert(i, copy.deepcopy(nodes[i]))
        return f"node {i} duplicated", False, False
    if how == "swap":
        i, j = d.int(0, len(nodes) - 1), d.int(0, len(nodes) - 1)
        nodes[i], nodes[j] = nodes[j], nodes[i]
        return f"nodes {i} and {j} swapped", False, False
    if how == "reverse":
        nodes.reverse()
        return "nodes reversed", False, False
    if how == "insert_relu":  # a valid new node: relu spliced after node i
        i = d.int(0, len(nodes) - 1)
        out = nodes[i]["outputs"][0]
        new = {"op": d.choice(["relu", "relu", "softmax", "flatten"]), "name": "extra",
               "inputs": [out], "outputs": ["extra.out"], "attrs": {}, "params": {}}
        for m in nodes[i + 1:]:
            m["inputs"] = ["extra.out" if v == out else v for v in m["inputs"]]
        if g["output"] == out:
            g["output"] = "extra.out"
        nodes.insert(i + 1, new)
        return f"{new['op']} inserted after node {i}", False, False
    g["nodes"] = d.choice([None, {}, "conv", [1], [None], [[]]])
    return f"graph.nodes -> {g['nodes']!r}", False, False


def m_node_name(d, spec, case):
    nodes = _nodes(spec)
    if not nodes:
        return m_input_shape(d, spec, case)
    n = d.choice(nodes)
    old = n.get("name")
    n["name"] = d.choice([nodes[0]["name"], "", 1, None, "x" * 5000, "\u0000"])
    if d.bool(0.2):
        del n["name"]
    return f"node {old!r}: name -> {n.get('name', '<deleted>')!r}"[:200], False, False


def m_graph_fields(d, spec, case):
    meta = _meta(spec)
    g = meta["graph"]
    nodes = _nodes(spec)
    how = d.choice(["output", "ir_version", "input_name", "graph"])
    if how == "output":
        old = g.get("output")
        values = [g["input"]["name"]] + [m["outputs"][0] for m in nodes]
        g["output"] = d.choice(values + ["nowhere", 1, None, [old]])
        return f"graph.output {old!r} -> {g['output']!r}", False, False
    if how == "ir_version":
        old = g.get("ir_version", "<absent>")
        v = d.choice([0, 1, 2, -1, "1", 1.0, True, None, 2**63, 10**400, "<del>"])
        if v == "<del>":
            g.pop("ir_version", None)
        else:
            g["ir_version"] = v
        return f"graph.ir_version {old!r} -> {g.get('ir_version', '<absent>')!r}"[:100], \
            False, False
    if how == "input_name":
        old = g["input"]["name"]
        g["input"]["name"] = d.choice([nodes[0]["outputs"][0] if nodes else "v", "", 1, None])
        return f"graph.input.name {old!r} -> {g['input']['name']!r}", False, False
    meta["graph"] = d.choice([None, [], "graph", {}, {"nodes": []}])
    return f"metadata.graph -> {meta['graph']!r}", False, False


def m_preprocess(d, spec, case):
    meta = _meta(spec)
    pre = meta.setdefault("preprocess", {})
    if not isinstance(pre, dict):
        return noop(d, spec, case)
    key = d.choice(["mean", "std", "scale", "layout", "resize", "all"])
    if key == "all":
        meta["preprocess"] = d.choice([None, [], "NCHW", {}, 1])
        return f"preprocess -> {meta['preprocess']!r}", False, False
    old = pre.get(key)
    pre[key] = d.choice([[0.5], [0.0], [NAN], [INF], [1e308], [], [1, 2, 3, 4, 5], ["0.5"],
                         [None], [True], 0.5, 0.0, -1.0, NAN, INF, None, "x", [[0.5]],
                         [0.1] * 4, 2**63, "NHWC"])
    return f"preprocess.{key} {old!r} -> {pre[key]!r}", False, False


def m_labels(d, spec, case):
    meta = _meta(spec)
    old = meta.get("labels")
    meta["labels"] = d.choice([None, "abc", [1, 2], [None], ["a"] * 5000, {}, [], ["x", ["y"]],
                               ["\u0000", "\ud800"], [NAN]])
    if d.bool(0.1):
        meta.pop("labels")
    return f"labels {str(old)[:40]} -> {str(meta.get('labels', '<deleted>'))[:40]}", False, False


def m_tensors_list(d, spec, case):
    doc = spec.items[0].doc
    tl = doc["tensors"]
    how = d.choice(["delete", "duplicate", "section", "name", "swap_names", "type", "reverse",
                    "extra_key"])
    if not tl and how not in ("type", "section"):
        how = "type"
    if how == "delete":
        i = d.int(0, len(tl) - 1)
        tl.pop(i)
        return f"tensors[{i}] deleted from the list", False, False
    if how == "duplicate":
        i = d.int(0, len(tl) - 1)
        tl.insert(i, copy.deepcopy(tl[i]))
        return f"tensors[{i}] listed twice", False, False
    if how == "section":
        if not tl:
            tl.append({"name": "ghost", "section": 1})
        i = d.int(0, len(tl) - 1)
        old = tl[i]["section"]
        tl[i]["section"] = d.choice([0, -1, len(spec.items), len(spec.items) + 5, True, 1.0, "1",
                                     None, d.int(1, max(1, len(spec.items) - 1)), 2**64])
        return f"tensors[{i}].section {old} -> {tl[i]['section']!r}", False, False
    if how == "name":
        i = d.int(0, len(tl) - 1)
        old = tl[i]["name"]
        tl[i]["name"] = d.choice(["", 1, None, old + "x", old.upper(), tl[0]["name"], "x" * 1100])
        return f"tensors[{i}].name {old!r} -> {str(tl[i]['name'])[:40]!r}", False, False
    if how == "swap_names":
        i, j = d.int(0, len(tl) - 1), d.int(0, len(tl) - 1)
        tl[i]["name"], tl[j]["name"] = tl[j]["name"], tl[i]["name"]
        return f"tensors[{i}] and [{j}] names swapped", i == j, i == j
    if how == "reverse":
        tl.reverse()
        return "tensor list reversed (same map, not file order)", True, len(tl) < 2
    if how == "extra_key":
        i = d.int(0, len(tl) - 1)
        v = tl[i][d.choice(["dtype", "offset", "x"])] = _json_value(d)
        return f"tensors[{i}] gets an unknown key", _finite_json(v), _finite_json(v)
    doc["tensors"] = d.choice([None, {}, "t", [None], [[]], [1]])
    return f"tensors -> {doc['tensors']!r}", False, False


def m_toplevel(d, spec, case):
    doc = spec.items[0].doc
    how = d.choice(["metadata", "delete", "unknown_key", "node_key", "doc"])
    if how == "metadata":
        doc["metadata"] = d.choice([None, [], "m", 1])
        return f"metadata -> {doc['metadata']!r}", False, False
    if how == "delete":
        k = d.choice(["metadata", "tensors"])
        del doc[k]
        return f"top-level {k!r} deleted", False, False
    if how == "unknown_key":  # minor versions may add JSON keys: a reader ignores them
        v = doc[d.choice(["zzz", "aaa", "version"])] = _json_value(d)
        return "unknown top-level key added", _finite_json(v), _finite_json(v)
    if how == "node_key":
        nodes = _nodes(spec)
        if nodes:
            v = d.choice(nodes)[d.choice(["comment", "doc", "device"])] = _json_value(d)
            return "unknown key added to a node", False, _finite_json(v)
        v = _meta(spec)["extra"] = _json_value(d)
        return "unknown key added to the metadata", False, _finite_json(v)
    spec.items[0].doc = d.choice([[], "x", None, 1])
    spec.items[0].text = None
    return f"document -> {spec.items[0].doc!r}", False, False



MUTATIONS = [Mutation(name, weight, "fields", fn) for weight, name, fn in (
    (6, "m.attr_set", m_attr_set), (1, "m.attr_del", m_attr_del),
    (2, "m.input_shape", m_input_shape), (2, "m.node_io", m_node_io), (2, "m.node_op", m_node_op),
    (3, "m.node_params", m_node_params), (2, "m.nodes", m_nodes_list),
    (1, "m.node_name", m_node_name), (2, "m.graph", m_graph_fields),
    (2, "m.preprocess", m_preprocess), (1, "m.labels", m_labels),
    (3, "m.tensors", m_tensors_list), (1, "m.top", m_toplevel),
)]
