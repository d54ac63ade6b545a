"""The graph IR shared by engine, compress and the file format.

A Graph is a list of nodes in execution order. Each node names an op from the registry
(`engine.ops.OPS`), the values it reads and writes, JSON-able attributes, and its parameter
tensors by role (e.g. {"weight": "conv1.weight", "bias": "conv1.bias"}). Tensors are held in
`Graph.tensors`: float32 arrays or `formats.CodebookTensor`s.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from formats import CodebookTensor

# The graph schema and op set this engine reads. A file records the version it needs; a newer
# one is refused with a message saying so, never run with ops or attributes misunderstood.
IR_VERSION = 2  # 2: several inputs per node (a DAG) and the mobile op set (docs/OPS.md)
# An input dimension past this is damage (a 16-million-pixel side); it also keeps every size
# the planner computes from shapes within what a float can print.
MAX_INPUT_DIM = 1 << 24
# What version 1 knew (ops and their attributes): a file that needs no more is stamped 1, so
# older engines still run it; anything else is stamped 2, so they say "upgrade", not "unknown".
IR_1_ATTRS = {"conv2d": {"stride", "padding", "dilation", "groups"}, "linear": set(),
              "relu": set(), "maxpool2d": {"kernel", "stride", "padding"},
              "flatten": {"start_dim"}, "softmax": {"axis"}}


def _ir_1(node: Node) -> bool:
    known = IR_1_ATTRS.get(node.op)
    if known is None or len(node.inputs) != 1 or not set(node.attrs) <= known:
        return False
    padding = node.attrs.get("padding", 0)
    return (not (isinstance(padding, list) and len(padding) == 4)
            and all(node.attrs.get(k, 1) in (1, [1, 1]) for k in ("dilation", "groups")))


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
    """How a raw image becomes the model's input: x = (raw * scale - mean[c]) / std[c].
    An image file is first resized so its shorter side is `resize` pixels (0: it must
    already be the input's size) and centre-cropped to the input's (H, W) (engine/images.py).

    The raw range: with 0 < scale < 1 the model takes raw values in 0..1/scale (`raw_range`;
    0..255 for the usual 1/255: 8-bit pixels). `apply` takes integers as raw values; floats
    and bools must lie in that range with some value above 1, because floats in 0..1 are
    almost surely an image already divided by 255, which would be divided again and
    misclassified. Those, and anything outside the range, are refused with the range found
    and how to say what the values mean (`input_range`). With no raw range (scale >= 1) values
    go in as they are. NaN and infinity are always refused."""

    scale: float = 1.0 / 255.0
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    resize: int = 0

    @property
    def raw_range(self) -> tuple[float, float] | None:
        """(0, 1 / scale) (e.g. (0, 255)) when 0 < scale < 1, else None (no declared range)."""
        if not 0 < self.scale < 1:
            return None
        top = 1.0 / self.scale
        return 0.0, float(round(top)) if abs(top - round(top)) <= 1e-6 * top else top

    def apply(self, raw: np.ndarray, *, input_range: tuple[float, float] | None = None,
              source: str = "input") -> np.ndarray:
        """(N, C, H, W) raw values (e.g. uint8) -> float32 model input. `input_range` (lo, hi)
        says what the values span (lo black, hi white, e.g. (0, 1)): they are checked against
        it and mapped onto the raw range. Refused values raise InputError naming `source`."""
        from engine.errors import InputError

        x = np.asarray(raw)
        if x.dtype.kind not in "biuf":
            raise InputError(f"{source}: values of dtype {x.dtype} are not plain numbers")
        declared = self.raw_range
        if input_range is not None:
            lo, hi = self.check_range(input_range)
            if declared is None:
                raise InputError(f"{source}: an input range ({lo:g}..{hi:g}) was given, but the "
                                 f"model declares no raw range (its preprocessing scale is "
                                 f"{self.scale:g}): pass the values it takes as they are")
            found = self._extent(x, source)
            if found and (found[0] < lo or found[1] > hi):
                raise InputError(f"{source}: values in {self._span(found)}, outside the input "
                                 f"range {lo:g}..{hi:g} given")
            if (lo, hi) != declared:
                x = (x.astype(np.float32) - np.float32(lo)) * np.float32(declared[1] / (hi - lo))
        elif declared is not None and not (x.dtype == np.uint8 and declared[1] >= 255):
            self._check_raw(x, declared[1], source)
        elif x.dtype.kind == "f":
            self._extent(x, source)  # NaN / infinity
        x = np.asarray(x, dtype=np.float32) * np.float32(self.scale)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, -1, 1, 1)
        return (x - mean) / std

    @staticmethod
    def check_range(r) -> tuple[float, float]:
        """An input range as (lo, hi) floats: finite, lo < hi; else ValueError saying so."""
        try:
            lo, hi = (float(v) for v in r)
            ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"input_range must be two finite numbers (lo, hi) with lo < hi, "
                             f"got {_short(r)}")
        return lo, hi

    @staticmethod
    def _extent(x: np.ndarray, source: str) -> tuple[float, float] | None:
        """(min, max) of x, None when empty; NaN or infinity refused."""
        from engine.errors import InputError

        if x.size == 0:
            return None
        lo, hi = x.min(), x.max()  # NaN propagates through both
        if x.dtype.kind == "f" and not (np.isfinite(lo) and np.isfinite(hi)):
            raise InputError(f"{source}: the values hold NaN or infinity")
        return float(lo), float(hi)

    @staticmethod
    def _span(found: tuple[float, float]) -> str:
        """'0..76500', '0.03529..0.8039': whole numbers in full, others to 4 digits."""
        return "..".join(f"{v:.0f}" if v.is_integer() and abs(v) < 1e15 else f"{v:.4g}"
                         for v in found)

    @staticmethod
    def _check_raw(x: np.ndarray, top: float, source: str) -> None:
        """Raw values must lie in 0..top; floats and bools must also reach above 1."""
        from engine.errors import InputError

        found = Preprocess._extent(x, source)
        if found is None:
            return
        span = Preprocess._span(found)
        expected = (f"the model takes raw pixels in 0..{top:g} (its preprocessing divides them "
                    f"by {top:g})")
        if found[0] < 0 or found[1] > top:
            what = "integer values" if x.dtype.kind in "iu" else "values"
            raise InputError(f"{source}: {what} in {span}; {expected}: pass raw pixels, or say "
                             f"what your values span with --input-range LO..HI "
                             f"(input_range=(lo, hi) in Python)")
        if x.dtype.kind in "fb" and found[1] <= 1 < top:
            raise InputError(f"{source}: values in {span} look like 0..1 pixels; {expected}: "
                             f"pass --input-range 0..1 (input_range=(0, 1) in Python) to have "
                             f"them scaled, or multiply them by {top:g}")


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

    def ir_version(self) -> int:
        """The oldest graph IR version that can describe this graph."""
        if all(_ir_1(n) for n in self.nodes):
            return 1
        return IR_VERSION

    def to_metadata(self) -> dict:
        """The JSON-able description stored in a .pnn file's metadata section."""
        pre = {"scale": self.preprocess.scale, "mean": list(self.preprocess.mean),
               "std": list(self.preprocess.std), "layout": "NCHW"}
        if self.preprocess.resize:  # absent means 0: files without it stay as they were
            pre["resize"] = self.preprocess.resize
        return {
            "graph": {
                "ir_version": self.ir_version(),
                "input": {"name": self.input_name, "shape": list(self.input_shape)},
                "output": self.output_name,
                "nodes": [
                    {"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                     "attrs": n.attrs, "params": n.params}
                    for n in self.nodes
                ],
            },
            "labels": list(self.labels),
            "preprocess": pre,
            "producer": self.producer,
        }

    @classmethod
    def from_metadata(cls, meta: dict, tensors: dict[str, object]) -> Graph:
        """Inverse of to_metadata. The metadata is untrusted: every field's type is checked
        (a string where a list belongs would be read letter by letter). Raises ValueError
        naming what is malformed, or that the file needs a newer engine."""
        if not isinstance(meta, dict) or not isinstance(meta.get("graph"), dict):
            raise ValueError("malformed graph metadata: no 'graph' object")
        g = meta["graph"]
        version = g.get("ir_version", 1)  # files written before versioning are version 1
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"malformed graph metadata: ir_version {_short(version)}")
        if version > IR_VERSION:
            raise ValueError(f"the file needs graph IR version {version}; this engine reads up "
                             f"to {IR_VERSION}: upgrade pocketnn to run it")
        nodes_raw = _typed(g.get("nodes"), list, "graph.nodes")
        nodes = []
        for i, n in enumerate(nodes_raw):
            n = _typed(n, dict, f"node {i}")
            name = _typed(n.get("name"), str, f"node {i} name")
            nodes.append(Node(
                op=_typed(n.get("op"), str, f"node {name!r} op"),
                name=name,
                inputs=_strings(n.get("inputs"), f"node {name!r} inputs"),
                outputs=_strings(n.get("outputs"), f"node {name!r} outputs"),
                attrs=_typed(n.get("attrs", {}), dict, f"node {name!r} attrs"),
                params=_typed(n.get("params", {}), dict, f"node {name!r} params")))
        if len({n.name for n in nodes}) != len(nodes):
            raise ValueError("malformed graph metadata: node names are not unique")
        inp = _typed(g.get("input"), dict, "graph.input")
        shape = _typed(inp.get("shape"), list, "graph.input.shape")
        if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int)
                                  or not 1 <= d <= MAX_INPUT_DIM for d in shape):
            raise ValueError(f"malformed graph metadata: input shape {_short(shape)} is not "
                             f"(C, H, W) of integers in 1..{MAX_INPUT_DIM}")
        pre = _typed(meta.get("preprocess", {}), dict, "preprocess")
        preprocess = Preprocess(scale=_number(pre.get("scale", 1.0), "preprocess.scale"),
                                mean=_numbers(pre.get("mean", [0.0]), "preprocess.mean"),
                                std=_numbers(pre.get("std", [1.0]), "preprocess.std"),
                                resize=_count(pre.get("resize", 0), "preprocess.resize"))
        for what, values in (("mean", preprocess.mean), ("std", preprocess.std)):
            if len(values) not in (1, shape[0]):
                raise ValueError(f"malformed graph metadata: preprocess.{what} has "
                                 f"{len(values)} values for {shape[0]} channels")
        if any(v == 0 for v in preprocess.std):
            raise ValueError("malformed graph metadata: preprocess.std holds a zero")
        graph = cls(
            nodes=nodes,
            input_name=_typed(inp.get("name"), str, "graph.input.name"),
            input_shape=tuple(shape),
            output_name=_typed(g.get("output"), str, "graph.output"),
            tensors=tensors,
            labels=_strings(meta.get("labels", []), "labels"),
            preprocess=preprocess,
            producer=str(meta.get("producer", ""))[:200],
        )
        for node in nodes:
            for role, name in node.params.items():
                if not isinstance(name, str) or name not in tensors:
                    raise ValueError(f"node {node.name!r} ({role}) refers to a missing tensor "
                                     f"{_short(name)}")
        return graph


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(v, kind: type, what: str):
    if not isinstance(v, kind):
        raise ValueError(f"malformed graph metadata: {what} must be a {kind.__name__}, got "
                         f"{type(v).__name__}")
    return v


def _strings(v, what: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise ValueError(f"malformed graph metadata: {what} must be a list of strings")
    return list(v)


def _number(v, what: str) -> float:
    """A JSON number as a finite float (an int of 4,000 digits does not fit one)."""
    try:
        ok = not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(float(v))
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"malformed graph metadata: {what} must be a finite number, got "
                         f"{_short(v)}")
    return float(v)


def _count(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_INPUT_DIM:
        raise ValueError(f"malformed graph metadata: {what} must be an integer in "
                         f"0..{MAX_INPUT_DIM}, got {_short(v)}")
    return v


def _numbers(v, what: str) -> list[float]:
    return [_number(x, what) for x in _typed(v, list, what)]
