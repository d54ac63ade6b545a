"""relu: max(x, 0), elementwise; no attrs, no params."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params

NAME = "relu"
ATTRS = ()
INPUTS = (1, 1)  # input values read


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    return np.where(x > 0, x, np.zeros_like(x))


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample."""
    (in_shape,) = in_shapes
    return math.prod(in_shape), 0


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "relu_numpy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())

    def fn(x):
        return np.maximum(x, 0, dtype=x.dtype)
    return Kernel(select_kernel(backend), fn)
