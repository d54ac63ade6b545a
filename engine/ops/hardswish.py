"""hardswish: x * relu6(x + 3) / 6, elementwise (PyTorch, ONNX HardSwish); no attrs."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.elementwise import hardswish, hardswish_fused
from engine.ops.attrs import check_attrs, check_params

NAME = "hardswish"
ATTRS = ()
INPUTS = (1, 1)  # input values read


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    x = x.astype(np.float64)
    with np.errstate(invalid="ignore"):  # -inf * 0 is NaN, as in PyTorch
        return (x * np.minimum(np.maximum(x + 3, 0), 6) / 6).astype(np.float32)


def select_kernel(backend: str) -> str:
    """One fused Numba pass, or four NumPy passes."""
    check_backend(backend)
    return "hardswish_fused" if backend == "numba" else "hardswish_numpy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: add, clip (2), multiply, divide."""
    (in_shape,) = in_shapes
    return 5 * math.prod(in_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    return Kernel(name, hardswish_fused if name == "hardswish_fused" else hardswish)
