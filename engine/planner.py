"""Turn a Graph into an execution plan: check the graph, infer every shape, cost every step,
and let each op choose its kernel once (sparse codebook, SciPy sparse or dense) for the chosen
backend. The plan knows when each value is read for the last time, so the runtime frees it
there, and what a run costs (engine/budget.py): nothing is built or run over the limits."""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from engine.budget import Limits, count, human
from engine.errors import ModelError, SettingError
from engine.ir import Graph, Node
from engine.kernels import Kernel, _jit
from engine.ops import OPS
from engine.ops.attrs import inputs as check_inputs
from formats import CodebookTensor

BACKENDS = ("auto", "numba", "numpy")
FLOAT = 4  # every value is float32


def resolve_backend(backend: str) -> str:
    """'auto' -> 'numba' where Numba imports, else 'numpy'. Unknown names: SettingError."""
    if backend not in BACKENDS:
        raise SettingError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "numba" if _jit.HAVE_NUMBA else "numpy"
    if backend == "numba" and not _jit.HAVE_NUMBA:
        raise SettingError("backend 'numba' requested but Numba is not installed "
                         "(pip install 'pocketnn[numba]', or use --backend numpy)")
    return backend


@dataclass
class Step:
    node: Node                   # steps are in execution order (execution_order)
    out_shape: tuple[int, ...]   # per sample, no batch dimension
    macs: int = 0                # multiply-adds (or element operations) per sample
    workspace: int = 0           # bytes per sample beyond the input and output values
    free_after: tuple[str, ...] = ()  # values nobody reads after this step
    kernel: Kernel | None = field(default=None, repr=False)


@dataclass
class Plan:
    steps: list[Step]
    shapes: dict[str, tuple[int, ...]]  # every value, per sample
    value_bytes: dict[str, int]  # per sample
    peak: int                    # bytes per sample at the busiest step: live values + workspace
    peak_step: int               # index of that step
    macs: int                    # per sample, all steps
    weights: int = 0             # bytes the prepared parameters hold (independent of batch)

    def memory(self, batch: int) -> int:
        """Bytes a run of `batch` samples needs at its peak."""
        return self.weights + batch * self.peak


def _param_shape(t) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def execution_order(graph: Graph, source: str = "model") -> list[Node]:
    """The nodes in an order where every value is written before it is read: file order
    among the nodes that are ready (Kahn's algorithm), so a file listed in order runs as
    listed. ModelError for an unknown op, a node not of one output, a value written twice, a
    value nobody writes, or a cycle."""
    writer = {graph.input_name: None}
    for node in graph.nodes:
        if node.op not in OPS:
            raise ModelError(f"{source}: node {node.name!r} uses unknown op {node.op!r}; "
                             f"this engine knows {', '.join(sorted(OPS))}")
        if len(node.outputs) != 1:
            raise ModelError(f"{source}: node {node.name!r} must write one value, not "
                             f"{len(node.outputs)}")
        if node.outputs[0] in writer:
            raise ModelError(f"{source}: node {node.name!r} writes {node.outputs[0]!r}, which "
                             f"is already written")
        writer[node.outputs[0]] = node
    readers: dict[str, list[int]] = {}
    waiting = []  # per node: how many of its distinct inputs are not yet written
    for i, node in enumerate(graph.nodes):
        for name in dict.fromkeys(node.inputs):
            if name not in writer:
                raise ModelError(f"{source}: node {node.name!r} reads {name!r}, which no node "
                                 f"writes")
            readers.setdefault(name, []).append(i)
        waiting.append(len(set(node.inputs)))
    for i in readers.get(graph.input_name, []):
        waiting[i] -= 1
    ready = [i for i, w in enumerate(waiting) if w == 0]  # a heap: file order among the ready
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(graph.nodes[i])
        for j in readers.get(graph.nodes[i].outputs[0], []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(graph.nodes):
        stuck = [n.name for n, w in zip(graph.nodes, waiting, strict=True) if w > 0]
        raise ModelError(f"{source}: the graph has a cycle through node(s) "
                         f"{', '.join(map(repr, stuck[:5]))}{' ...' if len(stuck) > 5 else ''}")
    return order


def shapes(graph: Graph, source: str = "model", limits: Limits | None = None,
           order: list[Node] | None = None) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every value in the graph. Raises ModelError naming the node; a value
    larger than the memory limit for one sample is refused here, before anything is built."""
    limits = limits or Limits()
    known = {graph.input_name: _checked(tuple(graph.input_shape), "the graph input", source,
                                        limits)}
    for node in order if order is not None else execution_order(graph, source):
        op = OPS[node.op]
        params = {role: _param_shape(t) for role, t in graph.params_of(node).items()}
        in_shapes = tuple(known[name] for name in node.inputs)
        try:
            check_inputs(node.op, in_shapes, *op.INPUTS)
            out = tuple(op.infer_shape(node.attrs, in_shapes, params))
        except (ValueError, TypeError, KeyError) as e:
            raise ModelError(f"{source}: node {node.name!r} ({node.op}): {e}") from None
        known[node.outputs[0]] = _checked(out, f"node {node.name!r} ({node.op}) output",
                                          source, limits)
    if graph.output_name not in known:
        raise ModelError(f"{source}: graph output {graph.output_name!r} is never produced")
    return known


def check_finite(name: str, t) -> None:
    """ValueError unless every weight value is a finite float32: NaN or infinity in a weight is
    damage (the answers would depend on the order of the sums), and so is a scale times a
    codebook entry that overflows float32."""
    if isinstance(t, CodebookTensor):
        book = np.abs(np.asarray(t.codebook, np.float64))
        top = book.max(axis=-1) if book.size else np.zeros(1)
        if t.scale is not None:
            top = top * np.abs(np.asarray(t.scale, np.float64))
        if not np.all(np.isfinite(top)) or (top.size and top.max() > np.finfo(np.float32).max):
            raise ValueError(f"tensor {name!r}: a codebook value (scale x entry) is NaN, "
                             f"infinite or beyond float32")
    elif not np.all(np.isfinite(t)):
        raise ValueError(f"tensor {name!r}: holds NaN or infinity")


def _checked(shape: tuple[int, ...], what: str, source: str, limits: Limits) -> tuple[int, ...]:
    if any(int(s) < 1 for s in shape):
        raise ModelError(f"{source}: {what} has shape {shape}; every dimension must be >= 1")
    size = FLOAT * math.prod(shape)
    if size > limits.max_memory:
        raise ModelError(f"{source}: {what} of shape {shape} needs {human(size)} per image, "
                         f"over the limit of {human(limits.max_memory)} (max_memory)")
    return shape


def _lifetimes(graph: Graph, steps: list[Step], value_bytes: dict[str, int]) -> tuple[int, int]:
    """Set each step's free_after from the last reader of every value; return (peak bytes per
    sample, step index of the peak). A chain holds two values at a time, not all of them."""
    last = {graph.input_name: -1}
    for i, step in enumerate(steps):
        for name in step.node.inputs:
            last[name] = i
        for name in step.node.outputs:
            last.setdefault(name, i)  # written, never read: dead right after its step
    last[graph.output_name] = len(steps)
    dead_after: dict[int, list[str]] = {}
    for name, i in last.items():
        dead_after.setdefault(max(i, 0), []).append(name)
    live = value_bytes[graph.input_name]
    peak, peak_step = live, 0
    for i, step in enumerate(steps):
        live += sum(value_bytes[name] for name in step.node.outputs)
        if live + step.workspace > peak:
            peak, peak_step = live + step.workspace, i
        step.free_after = tuple(n for n in dead_after.get(i, []) if n != graph.output_name)
        live -= sum(value_bytes[n] for n in step.free_after)
    return peak, peak_step


def plan(graph: Graph, backend: str, source: str = "model",
         limits: Limits | None = None) -> Plan:
    """Check the graph, cost it, and build one kernel per node for `backend` ('numba' or
    'numpy'). Over the limits: a ModelError naming the node, the figure and the limit."""
    limits = limits or Limits()
    order = execution_order(graph, source)
    value_shapes = shapes(graph, source, limits, order)
    value_bytes = {name: FLOAT * math.prod(s) for name, s in value_shapes.items()}
    steps = []
    for node in order:
        try:
            macs, workspace = OPS[node.op].cost(node.attrs,
                                               tuple(value_shapes[n] for n in node.inputs),
                                               value_shapes[node.outputs[0]],
                                               graph.params_of(node), backend)
        except (ValueError, TypeError, KeyError) as e:
            raise ModelError(f"{source}: node {node.name!r} ({node.op}): {e}") from None
        steps.append(Step(node, value_shapes[node.outputs[0]], int(macs), int(workspace)))
    peak, peak_step = _lifetimes(graph, steps, value_bytes)
    result = Plan(steps, value_shapes, value_bytes, peak, peak_step, sum(s.macs for s in steps))
    check(result, source, limits)  # before any kernel is built
    for step in steps:
        node = step.node
        try:
            for name in node.params.values():
                check_finite(name, graph.tensors[name])
            step.kernel = OPS[node.op].build(node.attrs, graph.params_of(node), backend)
        except (ValueError, TypeError, KeyError) as e:
            raise ModelError(f"{source}: node {node.name!r} ({node.op}): {e}") from None
    result.weights = sum(s.kernel.resident for s in steps)
    check(result, source, limits)
    return result


def check(p: Plan, source: str, limits: Limits, batch: int = 1) -> None:
    """ModelError unless a run of `batch` samples fits the limits."""
    if p.macs > limits.max_macs:
        big = max(p.steps, key=lambda s: s.macs)
        raise ModelError(f"{source}: {count(p.macs)} multiply-adds per image, over the limit of "
                         f"{count(limits.max_macs)} (max_macs); node {big.node.name!r} "
                         f"({big.node.op}) alone needs {count(big.macs)}")
    need = p.memory(batch)
    if need > limits.max_memory:
        at = p.steps[p.peak_step].node
        raise ModelError(f"{source}: a batch of {batch} needs {human(need)} (weights "
                         f"{human(p.weights)} + {human(p.peak)} per image at node {at.name!r}), "
                         f"over the limit of {human(limits.max_memory)} (max_memory)")
