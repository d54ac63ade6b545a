"""hardsigmoid: max(0, min(1, alpha * x + beta)), elementwise (ONNX HardSigmoid). attrs
{"alpha": 1/6, "beta": 0.5}: the defaults are PyTorch's (ONNX's alpha is 0.2: an importer
passes it explicitly)."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.elementwise import hardsigmoid, hardsigmoid_fused
from engine.ops.attrs import check_attrs, check_params, number

NAME = "hardsigmoid"
ATTRS = ("alpha", "beta")
INPUTS = (1, 1)  # input values read
FLOAT32_MAX = float(np.finfo(np.float32).max)


def coefficients(attrs: dict) -> tuple[np.float32, np.float32]:
    """(alpha, beta) as float32, each finite and within float32."""
    check_attrs(NAME, attrs, ATTRS)
    out = []
    for key, default in (("alpha", 1 / 6), ("beta", 0.5)):
        v = number(attrs.get(key, default), f"hardsigmoid: {key}")
        if abs(v) > FLOAT32_MAX:
            raise ValueError(f"hardsigmoid: {key}={v!r} is beyond float32")
        out.append(np.float32(v))
    return out[0], out[1]


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    coefficients(attrs)
    check_params(NAME, params, ())
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    alpha, beta = coefficients(attrs)
    t = float(alpha) * x.astype(np.float64) + float(beta)
    return np.where(t < 0, 0.0, np.where(t > 1, 1.0, t)).astype(np.float32)


def select_kernel(backend: str) -> str:
    """One fused Numba pass, or three NumPy passes."""
    check_backend(backend)
    return "hardsigmoid_fused" if backend == "numba" else "hardsigmoid_numpy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: multiply, add, clip to 0..1."""
    (in_shape,) = in_shapes
    return 4 * math.prod(in_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    alpha, beta = coefficients(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    run = hardsigmoid_fused if name == "hardsigmoid_fused" else hardsigmoid

    def fn(x):
        return run(x, alpha, beta)
    return Kernel(name, fn)
