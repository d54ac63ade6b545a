"""clip: min(max(x, min), max), elementwise. attrs {"min": a, "max": b} (finite numbers; an
absent bound is no bound; min <= max). ReLU6 is clip 0..6. NaN stays NaN (PyTorch, NumPy)."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params, number

NAME = "clip"
ATTRS = ("min", "max")
INPUTS = (1, 1)  # input values read
FLOAT32_MAX = float(np.finfo(np.float32).max)


def bounds(attrs: dict) -> tuple[float | None, float | None]:
    """(lo, hi) as float32-representable floats, None where absent."""
    check_attrs(NAME, attrs, ATTRS)
    lo, hi = (number(attrs[k], f"clip: {k}") if k in attrs else None for k in ("min", "max"))
    for v, k in ((lo, "min"), (hi, "max")):
        if v is not None and abs(v) > FLOAT32_MAX:
            raise ValueError(f"clip: {k}={v!r} is beyond float32")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"clip: min={lo!r} is above max={hi!r}")
    return lo, hi


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    bounds(attrs)
    check_params(NAME, params, ())
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    lo, hi = bounds(attrs)
    y = x.astype(np.float64)
    if lo is not None:
        y = np.where(y < np.float32(lo), np.float32(lo), y)
    if hi is not None:
        y = np.where(y > np.float32(hi), np.float32(hi), y)
    return y.astype(np.float32)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "clip_numpy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element comparisons, workspace bytes) per sample: one per bound per element."""
    (in_shape,) = in_shapes
    lo, hi = bounds(attrs)
    return max((lo is not None) + (hi is not None), 1) * math.prod(in_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    lo, hi = bounds(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    lo = None if lo is None else np.float32(lo)
    hi = None if hi is None else np.float32(hi)
    if lo is None and hi is None:
        def fn(x):
            return x.copy()
    else:
        def fn(x):
            return np.clip(x, lo, hi)  # one pass (two for np.minimum(np.maximum(...)))
    return Kernel(name, fn)
