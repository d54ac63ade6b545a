"""`engine.load(path) -> Model` and `Model.run(x)`: the Python API users touch.

Decoding and kernel building happen once per file and backend per process: a second `load`
of an unchanged file returns the same Model, and Numba's `cache=True` keeps compiled kernels
on disk across processes.
"""

from __future__ import annotations

import os
import threading

import numpy as np

import formats
from engine import planner
from engine.errors import ModelError
from engine.inputs import InputError, as_nchw
from engine.ir import Graph
from engine.kernels import _jit

_LOCK = threading.Lock()
_GRAPHS: dict[tuple, Graph] = {}      # file identity -> decoded graph
_MODELS: dict[tuple, Model] = {}      # (file identity, backend) -> planned model


def _identity(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        raise formats.FormatError("no such file", path=path) from None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def read_graph(path: str | os.PathLike) -> Graph:
    """Decode a .pnn file into a Graph (cached per unchanged file)."""
    path = os.fspath(path)
    key = _identity(path)
    with _LOCK:
        if key in _GRAPHS:
            return _GRAPHS[key]
    with formats.open(path) as f:
        graph = graph_of(f.metadata, f.tensors(), path)
    with _LOCK:
        _GRAPHS[key] = graph
    return graph


def graph_of(metadata: dict, tensors: dict, path: str) -> Graph:
    """The Graph a file's metadata describes; a malformed one is a ModelError naming the file."""
    try:
        return Graph.from_metadata(metadata, tensors)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None) -> Model:
    """Load a .pnn model ready to run. backend: 'auto' (Numba if installed), 'numba', 'numpy'."""
    path = os.fspath(path)
    backend = planner.resolve_backend(backend)
    if threads is not None:
        _jit.set_threads(threads)
    key = (_identity(path), backend)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
    model = Model(read_graph(path), backend, source=path)
    with _LOCK:
        _MODELS[key] = model
    return model


class Model:
    """A planned graph: `run` float32 NCHW input -> logits; `preprocess` raw images first."""

    def __init__(self, graph: Graph, backend: str = "auto", source: str = "model"):
        self.graph = graph
        self.source = source
        self.backend = planner.resolve_backend(backend)
        self.steps = planner.plan(graph, self.backend, source)

    @property
    def labels(self) -> list[str]:
        return self.graph.labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.input_shape)

    def preprocess(self, raw: np.ndarray) -> np.ndarray:
        """Raw images (HW, CHW, NHW or NCHW; e.g. uint8 0-255) -> float32 NCHW model input."""
        return self.graph.preprocess.apply(as_nchw(raw, self.input_shape, self.source))

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W), already preprocessed -> float32 logits (N, classes)."""
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"{self.source}: input of shape {tuple(x.shape)}; the model takes "
                             f"(N, {', '.join(map(str, self.input_shape))}) float32")
        values = {self.graph.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        for step in self.steps:
            values[step.node.outputs[0]] = step.kernel(values[step.node.inputs[0]])
        return values[self.graph.output_name]

    def __repr__(self) -> str:
        return (f"Model({self.source!r}, backend={self.backend!r}, "
                f"input={self.input_shape}, layers={len(self.steps)})")
