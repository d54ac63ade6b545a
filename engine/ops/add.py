"""add: x + y elementwise with NumPy broadcasting; two values, or one value and the constant
param `b` broadcast against one sample (engine/ops/broadcast.py). No attrs."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops import broadcast

NAME = "add"
ATTRS = broadcast.ATTRS
INPUTS = broadcast.INPUTS  # two values, or one value and param b
PARAMS = broadcast.PARAMS  # required, optional


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    return broadcast.infer_shape(NAME, attrs, in_shapes, params)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    return broadcast.reference(np.add, xs, params)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "add_numpy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: one per output element."""
    return broadcast.cost(in_shapes, out_shape)


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    return broadcast.build(NAME, np.add, attrs, params, backend)
