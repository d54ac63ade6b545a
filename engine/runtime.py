"""`engine.load(path) -> Model` and `Model.run(x)`: the Python API users touch.

Decoding and kernel building happen once per file, backend and limits per process: a second
`load` of an unchanged file returns the same Model, and Numba's `cache=True` keeps compiled
kernels on disk across processes. Nothing is decoded, built or run before its cost is checked
against the limits (engine/budget.py, docs/SECURITY.md).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np

import formats
from engine import classify, planner
from engine.budget import Limits, human
from engine.errors import InputError, ModelError
from engine.ir import Graph
from engine.kernels import _jit

_LOCK = threading.Lock()
CACHE_SIZE = 4  # models kept per process: a phone app loads one or two; a loop over files
_GRAPHS: OrderedDict[tuple, Graph] = OrderedDict()  # file identity -> decoded graph
_MODELS: OrderedDict[tuple, Model] = OrderedDict()  # (identity, backend, limits) -> model


def _identity(path: str) -> tuple:
    """What makes two loads the same file: a replaced file (new inode) or one rewritten in
    place (new ctime) is decoded again, even within one mtime tick and at the same size."""
    try:
        st = os.stat(path)
    except OSError:
        raise formats.FormatError("no such file", path=path) from None
    return (os.path.realpath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
            st.st_ctime_ns)


def _cached(cache: OrderedDict, key):
    with _LOCK:
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    return None


def _remember(cache: OrderedDict, key, value) -> None:
    with _LOCK:
        cache[key] = value
        while len(cache) > CACHE_SIZE:
            cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every decoded file and planned model (the next load reads the file again)."""
    with _LOCK:
        _GRAPHS.clear()
        _MODELS.clear()


def decoded_bytes(info: formats.TensorInfo) -> int:
    """An upper bound of the bytes a tensor holds once decoded, from its header alone."""
    size = int(np.prod(info.shape, dtype=object)) if info.shape else 1
    if info.encoding != "codebook":
        return 4 * size  # float16 is widened to float32 by the kernels that read it
    row_size = size // info.shape[0] if info.shape[0] else 0
    index_bytes = formats.index_dtype(row_size).itemsize
    code_bytes = formats.code_dtype(info.bits).itemsize
    return info.nnz * (index_bytes + code_bytes) + 8 * (info.shape[0] + 1) + info.nbytes


def read_graph(path: str | os.PathLike, limits: Limits | None = None) -> Graph:
    """Decode a .pnn file into a Graph (cached per unchanged file). The tensors' decoded size
    is checked against the memory limit from their headers, before any is decoded."""
    path = os.fspath(path)
    limits = limits or Limits()
    key = _identity(path)
    cached = _cached(_GRAPHS, key)
    if cached is not None:
        return cached
    with formats.open(path) as f:
        need = sum(decoded_bytes(f.info(name)) for name in f.tensor_names)
        if need > limits.max_memory:
            biggest = max(f.tensor_names, key=lambda n: decoded_bytes(f.info(n)))
            raise ModelError(f"{path}: the weights need {human(need)} decoded (tensor "
                             f"{biggest!r}: {human(decoded_bytes(f.info(biggest)))}), over the "
                             f"limit of {human(limits.max_memory)} (max_memory)")
        graph = graph_of(f.metadata, f.tensors(), path)
    _remember(_GRAPHS, key, graph)
    return graph


def graph_of(metadata: dict, tensors: dict, path: str) -> Graph:
    """The Graph a file's metadata describes; a malformed one is a ModelError naming the file."""
    try:
        return Graph.from_metadata(metadata, tensors)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None, *,
         max_memory: int | None = None, max_macs: int | None = None) -> Model:
    """Load a .pnn model ready to run. backend: 'auto' (Numba if installed), 'numba', 'numpy'.

    max_memory (bytes, default 1 GiB) bounds the weights plus the activations and workspaces
    of one run; max_macs (default 20 G) the multiply-adds per image. A file over them is a
    ModelError before anything large is allocated; a batch over them is an InputError."""
    path = os.fspath(path)
    backend = planner.resolve_backend(backend)
    limits = Limits.of(max_memory, max_macs)
    if threads is not None:
        _jit.set_threads(threads)
    key = (_identity(path), backend, limits)
    cached = _cached(_MODELS, key)
    if cached is not None:
        return cached
    model = Model(read_graph(path, limits), backend, source=path, limits=limits)
    _remember(_MODELS, key, model)
    return model


class Model:
    """A planned graph: `run` float32 NCHW input -> logits; `preprocess` raw images first."""

    def __init__(self, graph: Graph, backend: str = "auto", source: str = "model",
                 limits: Limits | None = None):
        self.graph = graph
        self.source = source
        self.backend = planner.resolve_backend(backend)
        self.limits = limits or Limits()
        self.plan = planner.plan(graph, self.backend, source, self.limits)
        self.steps = self.plan.steps

    @property
    def labels(self) -> list[str]:
        return self.graph.labels

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.graph.input_shape)

    def memory(self, batch: int = 1) -> int:
        """Bytes a run of `batch` images needs at its peak (weights, live values, workspace)."""
        return self.plan.memory(batch)

    def max_batch(self) -> int:
        """The largest batch whose run fits max_memory (at least 1: load checked that)."""
        room = self.limits.max_memory - self.plan.weights
        return max(1, room // max(self.plan.peak, 1))

    def preprocess(self, inputs, *, input_range=None) -> np.ndarray:
        """Image files, PIL images, array files or arrays -> float32 NCHW (engine.classify)."""
        return classify.preprocess(self, inputs, input_range=input_range)

    def predict(self, inputs, top: int | None = 5, *, input_range=None):
        """Per image, its `top` classes as Top(label, prob, index) (engine.classify.predict)."""
        return classify.predict(self, inputs, top, input_range=input_range)

    def run(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, C, H, W), already preprocessed -> float32 logits (N, classes)."""
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.dtype.kind not in "biuf":
            raise InputError(f"{self.source}: input of shape {tuple(x.shape)} ({x.dtype}); the "
                             f"model takes (N, {', '.join(map(str, self.input_shape))}) float32")
        n = x.shape[0]
        if n > self.max_batch():
            raise InputError(f"{self.source}: a batch of {n} needs {human(self.memory(n))}, "
                             f"over the limit of {human(self.limits.max_memory)} (max_memory); "
                             f"run at most {self.max_batch()} images at a time")
        if n == 0:
            return np.zeros((0, *self.plan.shapes[self.graph.output_name]), dtype=np.float32)
        values = {self.graph.input_name: np.ascontiguousarray(x, dtype=np.float32)}
        for step in self.plan.steps:
            values[step.node.outputs[0]] = step.kernel(*(values[n] for n in step.node.inputs))
            for name in step.free_after:
                del values[name]
        return values[self.graph.output_name]

    def __repr__(self) -> str:
        return (f"Model({self.source!r}, backend={self.backend!r}, "
                f"input={self.input_shape}, layers={len(self.steps)})")
