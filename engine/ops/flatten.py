"""flatten: merge dims start_dim..end into one. attrs {"start_dim": 1} (dims count the batch)."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params, integer

NAME = "flatten"
ATTRS = ("start_dim",)
INPUTS = (1, 1)  # input values read


def _start(attrs: dict, ndim: int) -> int:
    """start_dim in batch-first numbering, checked against an input of `ndim` dims."""
    check_attrs(NAME, attrs, ATTRS)
    start = integer(attrs.get("start_dim", 1), "flatten: start_dim", -ndim, ndim - 1)
    if start < 0:
        start += ndim
    if not 1 <= start < ndim:
        raise ValueError(f"flatten: start_dim={attrs.get('start_dim', 1)} out of range for a "
                         f"{ndim}-d input (the batch dim 0 cannot be merged)")
    return start


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_params(NAME, params, ())
    start = _start(attrs, len(in_shape) + 1) - 1  # per-sample shape has no batch dim
    return tuple(in_shape[:start]) + (math.prod(in_shape[start:]),)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    start = _start(attrs, x.ndim)
    return x.reshape(*x.shape[:start], -1)


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element copies, workspace bytes) per sample: a copy only if the input is strided."""
    (in_shape,) = in_shapes
    return math.prod(in_shape), 0


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "flatten_reshape"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_params(NAME, params, ())
    name = select_kernel(backend)
    starts = {}  # input rank -> checked start_dim: the attrs are checked once, not per image

    def fn(x):
        start = starts.get(x.ndim)
        if start is None:
            start = starts[x.ndim] = _start(attrs, x.ndim)
        return np.ascontiguousarray(x).reshape(*x.shape[:start], -1)
    return Kernel(name, fn)
