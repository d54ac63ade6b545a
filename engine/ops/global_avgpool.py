"""global_avgpool: the mean of each channel's plane, (C, H, W) -> (C, 1, 1) (ONNX
GlobalAveragePool, PyTorch adaptive_avg_pool2d(x, 1)); no attrs, no params."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.pool import global_avgpool_nchw
from engine.ops.attrs import check_attrs, check_params

NAME = "global_avgpool"
ATTRS = ()
INPUTS = (1, 1)  # input values read


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (C, 1, 1)."""
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    if len(in_shape) != 3:
        raise ValueError(f"global_avgpool: input must be (C, H, W) per sample, got "
                         f"{tuple(in_shape)}")
    return (in_shape[0], 1, 1)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: a float64 sum over each plane, divided by its size."""
    (x,) = xs
    n, c, h, w = x.shape
    y = np.empty((n, c, 1, 1), dtype=np.float64)
    for i in range(n):
        for j in range(c):
            y[i, j, 0, 0] = np.sum(x[i, j], dtype=np.float64) / (h * w)
    return y.astype(np.float32)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "global_avgpool_nchw"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element additions, workspace bytes) per sample: one per input element, a division
    per channel."""
    (in_shape,) = in_shapes
    return math.prod(in_shape) + in_shape[0], 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    return Kernel(select_kernel(backend), global_avgpool_nchw)
