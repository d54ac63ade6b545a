"""Turn a Graph into an execution plan: check the graph, infer every shape, and let each op
choose its kernel once (sparse codebook, SciPy sparse or dense) for the chosen backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import ModelError
from engine.ir import Graph, Node
from engine.kernels import _jit
from engine.ops import OPS

BACKENDS = ("auto", "numba", "numpy")
# A value may hold at most this many floats per sample (256 MiB). MobileNetV2's largest is
# 1.2 M; the limit only exists so a hostile graph cannot make us allocate without bound.
MAX_VALUE_ELEMENTS = 2**26


def resolve_backend(backend: str) -> str:
    """'auto' -> 'numba' where Numba imports, else 'numpy'. Unknown names raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "numba" if _jit.HAVE_NUMBA else "numpy"
    if backend == "numba" and not _jit.HAVE_NUMBA:
        raise ValueError("backend 'numba' requested but Numba is not installed "
                         "(pip install 'pocketnn[numba]', or use --backend numpy)")
    return backend


@dataclass
class Step:
    node: Node
    kernel: object               # engine.ops Kernel: callable with .name
    out_shape: tuple[int, ...]   # per sample, no batch dimension


def _param_shape(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def shapes(graph: Graph, source: str = "model") -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every value in the graph. Raises ModelError naming the node."""
    known = {graph.input_name: _checked(tuple(graph.input_shape), "the graph input", source)}
    for node in graph.nodes:
        op = OPS.get(node.op)
        if op is None:
            raise ModelError(f"{source}: node {node.name!r} uses unknown op {node.op!r}; "
                             f"this engine knows {', '.join(sorted(OPS))}")
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            raise ModelError(f"{source}: node {node.name!r} must have one input and one output")
        if node.inputs[0] not in known:
            raise ModelError(f"{source}: node {node.name!r} reads {node.inputs[0]!r}, which no "
                             f"earlier node produces")
        params = {role: _param_shape(t) for role, t in graph.params_of(node).items()}
        try:
            known[node.outputs[0]] = tuple(op.infer_shape(node.attrs, known[node.inputs[0]],
                                                          params))
        except (ValueError, TypeError, KeyError) as e:
            raise ModelError(f"{source}: node {node.name!r} ({node.op}): {e}") from None
        _checked(known[node.outputs[0]], f"node {node.name!r}", source)
    if graph.output_name not in known:
        raise ModelError(f"{source}: graph output {graph.output_name!r} is never produced")
    return known


def _checked(shape: tuple[int, ...], what: str, source: str) -> tuple[int, ...]:
    if any(int(s) < 1 for s in shape):
        raise ModelError(f"{source}: {what} has shape {shape}; every dimension must be >= 1")
    if np.prod(shape, dtype=np.float64) > MAX_VALUE_ELEMENTS:
        raise ModelError(f"{source}: {what} would hold {shape} = "
                         f"{np.prod(shape, dtype=np.float64):.3g} floats per sample, over the "
                         f"limit of {MAX_VALUE_ELEMENTS}")
    return shape


def plan(graph: Graph, backend: str, source: str = "model") -> list[Step]:
    """Check the graph and build one kernel per node for `backend` ('numba' or 'numpy')."""
    value_shapes = shapes(graph, source)
    steps = []
    for node in graph.nodes:
        try:
            kernel = OPS[node.op].build(node.attrs, graph.params_of(node), backend)
        except (ValueError, TypeError, KeyError) as e:
            raise ModelError(f"{source}: node {node.name!r} ({node.op}): {e}") from None
        steps.append(Step(node, kernel, value_shapes[node.outputs[0]]))
    return steps
