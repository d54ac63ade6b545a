"""softmax along one axis, numerically stable (max subtracted first). attrs {"axis": 1}."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params, integer

NAME = "softmax"
ATTRS = ("axis",)
INPUTS = (1, 1)  # input values read


def _axis(attrs: dict, ndim: int) -> int:
    check_attrs(NAME, attrs, ATTRS)
    axis = integer(attrs.get("axis", 1), "softmax: axis", -ndim, ndim - 1)
    if axis % ndim == 0:
        raise ValueError(f"softmax: axis={axis} out of range for a {ndim}-d input "
                         f"(batch dim 0 excluded)")
    return axis % ndim


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_params(NAME, params, ())
    _axis(attrs, len(in_shape) + 1)
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    axis = _axis(attrs, x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: max, exp and divide; the output is
    the only full-size array."""
    (in_shape,) = in_shapes
    return 3 * math.prod(in_shape), 0


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "softmax_numpy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_params(NAME, params, ())
    name = select_kernel(backend)
    axis_of = {}  # input ndim -> axis, checked once

    def fn(x):
        if x.ndim not in axis_of:
            axis_of[x.ndim] = _axis(attrs, x.ndim)
        axis = axis_of[x.ndim]
        e = x - x.max(axis=axis, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=axis, keepdims=True)
        return e
    return Kernel(name, fn)
