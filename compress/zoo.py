"""Built-in model graphs: LeNet-300-100 and LeNet-5 as in Deep Compression (Han et al., 2016).

    g = build("lenet5", seed=0)   # engine.ir.Graph with float32 tensors, seeded init

Initialisation is PyTorch's default for nn.Conv2d / nn.Linear (the reference figures were
trained from it): weight ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform_ with a=sqrt(5)),
bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
"""

from __future__ import annotations

import numpy as np

from compress.datasets import FASHION_MNIST_LABELS, FASHION_MNIST_PREPROCESS
from engine.ir import Graph, Node, Preprocess

NAMES = ("lenet300", "lenet5")


def _init(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    fan_in = int(np.prod(shape[1:]))
    bound = 1.0 / np.sqrt(fan_in)
    w = rng.uniform(-bound, bound, size=shape).astype(np.float32)
    b = rng.uniform(-bound, bound, size=shape[0]).astype(np.float32)
    return w, b


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Node] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.last = "input"

    def add(self, op: str, name: str, attrs: dict | None = None,
            wshape: tuple[int, ...] | None = None, out: str | None = None) -> None:
        params = {}
        if wshape is not None:
            w, b = _init(self.rng, wshape)
            self.tensors[f"{name}.weight"], self.tensors[f"{name}.bias"] = w, b
            params = {"weight": f"{name}.weight", "bias": f"{name}.bias"}
        out = out or name
        self.nodes.append(Node(op=op, name=name, inputs=[self.last], outputs=[out],
                               attrs=dict(attrs or {}), params=params))
        self.last = out

    def graph(self) -> Graph:
        pre = FASHION_MNIST_PREPROCESS
        return Graph(nodes=self.nodes, input_name="input", input_shape=(1, 28, 28),
                     output_name=self.last, tensors=self.tensors,
                     labels=list(FASHION_MNIST_LABELS),
                     preprocess=Preprocess(pre.scale, list(pre.mean), list(pre.std)))


_CONV = {"stride": [1, 1], "padding": [0, 0]}
_POOL = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}
_FLAT = {"start_dim": 1}


def _lenet300(b: _Builder) -> None:
    b.add("flatten", "flatten", _FLAT)
    b.add("linear", "fc1", wshape=(300, 784))
    b.add("relu", "relu1")
    b.add("linear", "fc2", wshape=(100, 300))
    b.add("relu", "relu2")
    b.add("linear", "fc3", wshape=(10, 100), out="logits")


def _lenet5(b: _Builder) -> None:
    # Caffe's LeNet (examples/mnist/lenet_train_test.prototxt): no ReLU after the convs.
    b.add("conv2d", "conv1", _CONV, wshape=(20, 1, 5, 5))      # (N, 20, 24, 24)
    b.add("maxpool2d", "pool1", _POOL)                          # (N, 20, 12, 12)
    b.add("conv2d", "conv2", _CONV, wshape=(50, 20, 5, 5))     # (N, 50, 8, 8)
    b.add("maxpool2d", "pool2", _POOL)                          # (N, 50, 4, 4)
    b.add("flatten", "flatten", _FLAT)                          # (N, 800)
    b.add("linear", "fc1", wshape=(500, 800))
    b.add("relu", "relu1")
    b.add("linear", "fc2", wshape=(10, 500), out="logits")


_BUILDERS = {"lenet300": _lenet300, "lenet5": _lenet5}


def build(name: str, seed: int = 0) -> Graph:
    """A fresh graph of the named model with seeded float32 weights."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(NAMES)}")
    b = _Builder(seed)
    _BUILDERS[name](b)
    return b.graph()


def count_params(graph: Graph) -> int:
    """Number of scalar parameters (all tensors, weights and biases)."""
    return int(sum(int(np.prod(getattr(t, "shape", ()))) for t in graph.tensors.values()))
