"""What add and mul share: two values broadcast against each other, or one value and the
constant param `b` broadcast against one sample.

Values are batch first: two values broadcast by NumPy's rules with their batch axes equal,
so their per-sample shapes must have the same rank (a rank-2 value against a rank-4 one
would line the batch axis up with the height). `b` has at most a sample's rank and lines up
with the sample's trailing axes, never with the batch.
"""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend, dense_bias
from engine.ops.attrs import check_attrs, check_params

ATTRS = ()
INPUTS = (1, 2)  # two values, or one value and param b
PARAMS = (), ("b",)  # required, optional


def broadcast_shape(op: str, a: tuple, b: tuple, what: str) -> tuple:
    """NumPy's broadcast of shapes a and b (aligned on their last axes), or a ValueError naming
    the first axis (counted from the end) that does not fit."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and 1 not in (x, y):
            raise ValueError(f"{op}: {what} {tuple(a)} and {tuple(b)} do not broadcast: axis "
                             f"-{i} is {x} against {y} (each pair must be equal or hold a 1)")
        out.append(max(x, y) if 1 in (x, y) else x)
    return tuple(reversed(out))


def infer_shape(op: str, attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    check_attrs(op, attrs, ATTRS)
    check_params(op, params, *PARAMS)
    if len(in_shapes) == 2:
        if params.get("b") is not None:
            raise ValueError(f"{op}: reads two values or one value and param b, not both")
        a, b = (tuple(s) for s in in_shapes)
        if len(a) != len(b):
            raise ValueError(f"{op}: the per-sample shapes {a} and {b} differ in rank; values "
                             f"broadcast batch first, so the batch axis would line up with "
                             f"another (reshape one first)")
        return broadcast_shape(op, a, b, "per-sample shapes")
    (a,) = (tuple(s) for s in in_shapes)
    if params.get("b") is None:
        raise ValueError(f"{op}: one input value needs the constant param b to {op}")
    b = tuple(params["b"])
    if len(b) > len(a):
        raise ValueError(f"{op}: param b {b} has more axes than a sample {a}: it would "
                         f"broadcast along the batch axis")
    return broadcast_shape(op, a, b, "the sample shape and param b")


def reference(ufunc, xs: list, params: dict) -> np.ndarray:
    """The oracle: both operands spelled out to the output shape in float64, then combined."""
    if len(xs) == 2:
        a, b = (np.asarray(v, np.float64) for v in xs)
    else:
        a, b = np.asarray(xs[0], np.float64), np.asarray(params["b"], np.float64)
    shape = np.broadcast_shapes(a.shape, b.shape)
    return ufunc(np.broadcast_to(a, shape), np.broadcast_to(b, shape)).astype(np.float32)


def cost(in_shapes: tuple, out_shape: tuple) -> tuple[int, int]:
    """(element operations, workspace bytes) per sample: one per output element."""
    return math.prod(out_shape), 0


def build(op: str, ufunc, attrs: dict, params: dict, backend: str) -> Kernel:
    """One NumPy ufunc call into a new array (a single pass; on both backends)."""
    check_attrs(op, attrs, ATTRS)
    check_params(op, params, *PARAMS)
    check_backend(backend)
    name = f"{op}_numpy"
    if params.get("b") is None:
        def fn(x, y):
            return ufunc(x, y)
        return Kernel(name, fn)
    b = dense_bias(params["b"])

    def fn1(x):
        if b.ndim >= x.ndim:  # the planner refuses this; a direct caller gets a message
            raise ValueError(f"{op}: param b {b.shape} has more axes than a sample of "
                             f"{x.shape}")
        return ufunc(x, b)
    return Kernel(name, fn1, {"b": tuple(b.shape)}, b.nbytes)
