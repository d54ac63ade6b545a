"""What the ONNX translation rules share: the Context that knows each ONNX value, the Rule
record, and helpers for inputs, attributes and axes (compress/importers/onnx_ops.py,
onnx_shape_ops.py).

The context knows each ONNX value as either a runtime value (batch first, with its per-sample
shape from ONNX shape inference) or a constant (an ndarray; shape arithmetic holds the batch
size as the symbol BATCH). A rule reads its inputs from it and either emits IR nodes, records
a constant, aliases its output to its input, or raises Unsupported saying what the IR cannot
express.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from compress.importers.errors import printable
from engine.ir import Node

FOLD_LIMIT = 1 << 22  # elements a folded constant may have: shape arithmetic needs a handful


class Unsupported(Exception):
    """What one node needs that the IR cannot express (collected and reported together)."""


class _Batch:
    """The batch size inside shape arithmetic (Shape -> Gather -> Concat -> Reshape): known only
    at run time, so it may be moved around but not computed with."""

    def __repr__(self) -> str:
        return "N"


BATCH = _Batch()


@dataclass
class Context:
    shapes: dict[str, tuple | None]   # ONNX value -> full shape from shape inference (batch first)
    static_batch: int | None          # the graph input's batch dim when it is a fixed number
    current: str = ""                 # the IR name of the node being translated
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)  # ONNX runtime value -> IR value name
    nodes: list[Node] = field(default_factory=list)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    # ---- reading inputs ----------------------------------------------------------------------

    def is_const(self, name: str) -> bool:
        return name in self.consts

    def const(self, name: str, what: str) -> np.ndarray:
        if name not in self.consts:
            raise Unsupported(f"{what} ({q(name)}) must be a constant (an initializer or "
                              f"Constant), not computed at run time")
        return self.consts[name]

    def number_const(self, name: str, what: str) -> np.ndarray:
        """A constant that holds numbers (not the batch size)."""
        c = self.const(name, what)
        if c.dtype == object:
            raise Unsupported(f"{what} ({q(name)}) depends on the batch size")
        return c

    def value(self, name: str, what: str = "the input") -> str:
        """The IR value an ONNX runtime value is known as."""
        if name not in self.values:
            raise Unsupported(f"{what} ({q(name)}) is a constant; the op needs a run-time value")
        return self.values[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """Per-sample shape of a runtime value (the batch dim dropped)."""
        full = self.shapes.get(name)
        if full is None or len(full) < 1:
            raise Unsupported(f"the shape of {q(name)} is unknown (ONNX shape inference gave none)")
        rest = full[1:]
        if not all(isinstance(d, int) and d > 0 for d in rest):
            raise Unsupported(f"{q(name)} has shape {shown(full)}: every dim but the batch must "
                              f"be a fixed number")
        return tuple(rest)

    def image(self, name: str) -> tuple[int, int, int]:
        shape = self.shape(name)
        if len(shape) != 3:
            raise Unsupported(f"input {q(name)} is {len(shape) + 1}-d {shown(self.shapes[name])}; "
                              f"the op takes (N, C, H, W)")
        return shape

    # ---- writing outputs ---------------------------------------------------------------------

    def emit(self, node, op: str, inputs: list[str], attrs: dict | None = None,
             params: dict | None = None) -> None:
        """An IR node writing node.output[0]. params: role -> (array, initializer name or None
        when the array is computed here)."""
        name = self.current
        roles = {}
        for role, (arr, source) in (params or {}).items():
            roles[role] = self._tensor(f"{name}.{role}", np.asarray(arr), source)
        out = node.output[0]
        self.nodes.append(Node(op=op, name=name, inputs=[self.value(i) for i in inputs],
                               outputs=[out], attrs=attrs or {}, params=roles))
        self.values[out] = out

    def alias(self, node, src: str) -> None:
        """node.output[0] is src (Identity, Dropout): a constant stays a constant."""
        if src in self.consts:
            self.consts[node.output[0]] = self.consts[src]
        else:
            self.values[node.output[0]] = self.value(src)

    def set_const(self, node, arr: np.ndarray) -> None:
        arr = np.asarray(arr)
        if arr.dtype == object and not any(v is BATCH for v in arr.flat):
            arr = arr.astype(np.int64)  # shape arithmetic that no longer holds the batch
        if arr.size > FOLD_LIMIT:
            raise Unsupported(f"folding it would make a constant of {arr.size:,} elements")
        self.consts[node.output[0]] = arr

    def _tensor(self, preferred: str, arr: np.ndarray, source: str | None) -> str:
        """Register a parameter tensor: under its initializer's name when it is that
        initializer unchanged (and the name is free and short), else under node.role."""
        if (source and source not in self.tensors and len(source.encode("utf-8")) <= 512
                and not source.isspace()):
            name = source
        else:
            name, k = preferred, 2
            while name in self.tensors:
                name, k = f"{preferred}_{k}", k + 1
        self.tensors[name] = arr
        return name


@dataclass
class Rule:
    translate: object                       # (ctx, node, attrs, version) -> None
    attrs: tuple[str, ...] = ()             # attributes understood
    versions: tuple[int, ...] = ()          # op versions (since_version) understood
    fixed: dict = field(default_factory=dict)  # attribute -> the one value supported


def q(text: str) -> str:
    """A name from the file, quoted, printable and short: messages stay one line."""
    return f"'{printable(text, 60)}'"


def shown(full) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in full) + ")"


def finite(a: dict, key: str, default: float) -> float:
    """A float attribute that must be finite (it goes into the graph's JSON)."""
    v = float(a.get(key, default))
    if not math.isfinite(v):
        raise Unsupported(f"{key}={v}")
    return v


def given(node, i: int) -> bool:
    """Optional input i is present (ONNX leaves a trailing input out or names it '')."""
    return len(node.input) > i and node.input[i] != ""


def const_params(ctx: Context, node, specs) -> dict:
    """role -> (array, source) for the inputs [(index, role, what)] that are given."""
    out = {}
    for i, role, what in specs:
        if given(node, i):
            out[role] = (ctx.number_const(node.input[i], what).astype(np.float32), node.input[i])
    return out


def ints(a: dict, key: str, n: int, default: int, lo: int = 0) -> list[int]:
    """Attribute `key`: n ints, each at least lo."""
    v = list(a.get(key, [default] * n))
    if len(v) != n:
        raise Unsupported(f"{key}={shown(v)} for a 2-d op (want {n} values)")
    if any(not isinstance(x, int) or x < lo for x in v):
        raise Unsupported(f"{key}={shown(v)} (each must be at least {lo})")
    return [int(x) for x in v]


def check_axis(axis: int, rank: int, what: str = "axis") -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise Unsupported(f"{what}={axis} out of range for rank {rank}")
    if a == 0:
        raise Unsupported(f"{what}={axis} is the batch axis")
    return a


def rank_of(ctx: Context, name: str) -> int:
    return 1 + len(ctx.shape(name))
