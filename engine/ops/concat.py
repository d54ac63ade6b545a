"""concat: join 1..64 values along one axis. attrs {"axis": 1}: batch-first numbering (1 is
the channels of an NCHW value), negatives count from the end, the batch axis 0 is refused.
Every other axis must agree."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params, integer

NAME = "concat"
ATTRS = ("axis",)
INPUTS = (1, 64)  # input values read


def _axis(attrs: dict, ndim: int) -> int:
    """The axis in batch-first numbering, 1..ndim-1, for values of `ndim` dims (batch
    included)."""
    check_attrs(NAME, attrs, ATTRS)
    axis = integer(attrs.get("axis", 1), "concat: axis", -ndim, ndim - 1)
    if axis % ndim == 0:
        raise ValueError(f"concat: axis={axis} is the batch axis of a {ndim}-d value; values "
                         f"are joined along axes 1..{ndim - 1}")
    return axis % ndim


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    check_params(NAME, params, ())
    shapes = [tuple(s) for s in in_shapes]
    if not shapes:
        raise ValueError("concat reads 1 to 64 input value(s), the node gives 0")
    first = shapes[0]
    axis = _axis(attrs, len(first) + 1) - 1  # per-sample numbering
    for i, s in enumerate(shapes[1:], 1):
        if len(s) != len(first) or s[:axis] + s[axis + 1:] != first[:axis] + first[axis + 1:]:
            raise ValueError(f"concat: input {i} has per-sample shape {s}, input 0 {first}: "
                             f"all must agree except along axis {axis + 1}")
    return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: each input copied into its slice of the output."""
    axis = _axis(attrs, xs[0].ndim)
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = np.empty(shape, dtype=np.float32)
    at = 0
    for x in xs:
        index = [slice(None)] * y.ndim
        index[axis] = slice(at, at + x.shape[axis])
        y[tuple(index)] = x
        at += x.shape[axis]
    return y


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "concat_numpy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element copies, workspace bytes) per sample: every output element once."""
    return math.prod(out_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_params(NAME, params, ())
    name = select_kernel(backend)
    axis_of = {}  # value ndim -> axis, checked once

    def fn(*xs):
        ndim = xs[0].ndim
        if ndim not in axis_of:
            axis_of[ndim] = _axis(attrs, ndim)
        return np.concatenate(xs, axis=axis_of[ndim])
    return Kernel(name, fn)
