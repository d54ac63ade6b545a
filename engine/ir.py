"""The graph IR shared by engine, compress and the file format.

A Graph is a list of nodes in execution order. Each node names an op from the registry
(`engine.ops.OPS`), the values it reads and writes, JSON-able attributes, and its parameter
tensors by role (e.g. {"weight": "conv1.weight", "bias": "conv1.bias"}). Tensors are held in
`Graph.tensors`: float32 arrays or `formats.CodebookTensor`s.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from formats import CodebookTensor


@dataclass
class Node:
    op: str                 # registry name: conv2d, linear, relu, maxpool2d, flatten, softmax
    name: str               # unique, e.g. "conv1"
    inputs: list[str]       # value names read
    outputs: list[str]      # value names written
    attrs: dict = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)  # role -> tensor name


@dataclass
class Preprocess:
    """How a raw image becomes the model's input: x = (raw * scale - mean[c]) / std[c]."""

    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """(N, C, H, W) raw values (e.g. uint8) -> float32 model input."""
        x = np.asarray(raw, dtype=np.float32) * np.float32(self.scale)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std


@dataclass
class Graph:
    nodes: list[Node]
    input_name: str                   # the one graph input, NCHW
    input_shape: tuple[int, ...]      # per sample: (C, H, W)
    output_name: str                  # logits, (N, classes)
    tensors: dict[str, object]        # name -> np.ndarray (float32) | CodebookTensor
    labels: list[str] = field(default_factory=list)
    preprocess: Preprocess = field(default_factory=Preprocess)
    producer: str = "pocketnn"

    def copy(self) -> Graph:
        """A deep copy: the new graph shares no arrays with this one."""
        return copy.deepcopy(self)

    def params_of(self, node: Node) -> dict[str, object]:
        return {role: self.tensors[name] for role, name in node.params.items()}

    def dense_tensors(self) -> dict[str, np.ndarray]:
        """Every tensor as dense float32 (decompressed where needed)."""
        return {k: (v.to_dense() if isinstance(v, CodebookTensor) else np.asarray(v, np.float32))
                for k, v in self.tensors.items()}

    def to_metadata(self) -> dict:
        """The JSON-able description stored in a .pnn file's metadata section."""
        return {
            "graph": {
                "input": {"name": self.input_name, "shape": list(self.input_shape)},
                "output": self.output_name,
                "nodes": [
                    {"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                     "attrs": n.attrs, "params": n.params}
                    for n in self.nodes
                ],
            },
            "labels": list(self.labels),
            "preprocess": {"scale": self.preprocess.scale, "mean": list(self.preprocess.mean),
                           "std": list(self.preprocess.std), "layout": "NCHW"},
            "producer": self.producer,
        }

    @classmethod
    def from_metadata(cls, meta: dict, tensors: dict[str, object]) -> Graph:
        """Inverse of to_metadata. Raises ValueError naming what is malformed."""
        try:
            g = meta["graph"]
            nodes = [Node(op=str(n["op"]), name=str(n["name"]), inputs=list(n["inputs"]),
                          outputs=list(n["outputs"]), attrs=dict(n.get("attrs", {})),
                          params=dict(n.get("params", {})))
                     for n in g["nodes"]]
            pre = meta.get("preprocess", {})
            graph = cls(
                nodes=nodes,
                input_name=str(g["input"]["name"]),
                input_shape=tuple(int(s) for s in g["input"]["shape"]),
                output_name=str(g["output"]),
                tensors=tensors,
                labels=[str(s) for s in meta.get("labels", [])],
                preprocess=Preprocess(scale=float(pre.get("scale", 1.0)),
                                      mean=[float(v) for v in pre.get("mean", [0.0])],
                                      std=[float(v) for v in pre.get("std", [1.0])]),
                producer=str(meta.get("producer", "")),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed graph metadata: {type(e).__name__}: {e}") from None
        for node in nodes:
            for role, name in node.params.items():
                if name not in tensors:
                    raise ValueError(f"node {node.name!r} ({role}) refers to a missing tensor "
                                     f"{name!r}")
        return graph
