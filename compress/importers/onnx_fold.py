"""Graph IR passes after an ONNX import: BatchNorm folded into the conv or linear before it,
a per-channel constant add after one folded into its bias (each only where that conv/linear's
output has no other reader), and nodes that do not lead to the output dropped. Folding is
done in float64 and stored as float32 (a folded conv differs from conv-then-BN by float32
rounding: about 1e-7 relative in ResNet-18, docs/ONNX.md)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.ir import Node


def fold(nodes: list[Node], tensors: dict, output: str) -> tuple[list[Node], dict]:
    """BatchNorm into the conv/linear before it, a constant add after one into its bias (each
    only where that conv/linear's output has no other reader); then drop what does not lead to
    the output, and tensors nobody uses."""
    nodes = [Node(n.op, n.name, list(n.inputs), list(n.outputs), dict(n.attrs), dict(n.params))
             for n in nodes]
    tensors = dict(tensors)
    changed = True
    while changed:
        changed = False
        readers = Counter(i for n in nodes for i in n.inputs)
        writer = {n.outputs[0]: n for n in nodes}
        for node in nodes:
            src = writer.get(node.inputs[0]) if node.inputs else None
            if (src is None or src.op not in ("conv2d", "linear") or readers[src.outputs[0]] != 1
                    or src.outputs[0] == output):
                continue
            merged = _merge(src, node, tensors)
            if merged is not None:
                src.params.update(_store(nodes, tensors, src, merged))
                src.outputs = list(node.outputs)
                nodes.remove(node)
                changed = True
                break
    nodes = _live(nodes, output)
    used = {t for n in nodes for t in n.params.values()}
    return nodes, {k: v for k, v in tensors.items() if k in used}


def _merge(src: Node, node: Node, tensors: dict) -> dict | None:
    """The new {weight, bias} (or only bias) of `src` with `node` (batchnorm, or add of a
    per-channel constant) applied after it, or None when node cannot be folded into it."""
    if node.op not in ("batchnorm", "add") or len(node.inputs) != 1:
        return None
    out_channels = tensors[src.params["weight"]].shape[0]
    bias = (np.asarray(tensors[src.params["bias"]], np.float64) if "bias" in src.params
            else np.zeros(out_channels))
    if node.op == "batchnorm":
        w = np.asarray(tensors[src.params["weight"]], np.float64)
        scale = np.asarray(tensors[node.params["scale"]], np.float64)
        shift = np.asarray(tensors[node.params["shift"]], np.float64)
        return {"weight": w * scale.reshape((-1,) + (1,) * (w.ndim - 1)),
                "bias": bias * scale + shift}
    b = np.asarray(tensors[node.params["b"]], np.float64)
    rank = 3 if src.op == "conv2d" else 1  # per sample: (O, H, W) or (O,)
    shape = (1,) * (rank - b.ndim) + b.shape
    if b.ndim > rank or any(d != 1 for d in shape[1:]) or shape[0] not in (1, out_channels):
        return None  # not one value per output channel
    return {"bias": bias + np.broadcast_to(b.reshape(-1), (out_channels,))}


def _store(nodes: list[Node], tensors: dict, src: Node, merged: dict) -> dict:
    """Put the merged arrays under src's tensor names, or new names where another node reads
    the same tensor."""
    others = Counter(t for n in nodes if n is not src for t in n.params.values())
    roles = {}
    for role, arr in merged.items():
        name = src.params.get(role)
        if name is None or others[name]:
            name, k = f"{src.name}.{role}", 2
            while name in tensors:
                name, k = f"{src.name}.{role}_{k}", k + 1
        tensors[name] = arr.astype(np.float32)
        roles[role] = name
    return roles


def _live(nodes: list[Node], output: str) -> list[Node]:
    """The nodes the output depends on, in their order."""
    writer = {n.outputs[0]: n for n in nodes}
    needed, stack = set(), [output]
    while stack:
        n = writer.get(stack.pop())
        if n is not None and n.name not in needed:
            needed.add(n.name)
            stack.extend(n.inputs)
    return [n for n in nodes if n.name in needed]
