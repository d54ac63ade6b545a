"""batchnorm: inference batch normalisation, y = x * scale[c] + shift[c] on (N, C, ...).
params scale (C,), shift (C,): gamma / sqrt(var + eps) and beta - mean * scale, folded at
import (into the preceding conv where it can be); no attrs."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend, dense_bias
from engine.kernels.elementwise import batchnorm_nc, batchnorm_nc_fused
from engine.ops.attrs import check_attrs, check_params

NAME = "batchnorm"
ATTRS = ()
INPUTS = (1, 1)  # input values read
PARAMS = ("scale", "shift"), ()  # required, optional


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, ...) -> the same."""
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, *PARAMS)
    if len(in_shape) < 1:
        raise ValueError("batchnorm: input must have a channel axis (C, ...) per sample, got ()")
    c = in_shape[0]
    for role in PARAMS[0]:
        if tuple(params[role]) != (c,):
            raise ValueError(f"batchnorm: {role} must be ({c},) for {c} channels, got "
                             f"{tuple(params[role])}")
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: channel by channel, in float64."""
    (x,) = xs
    y = np.empty(x.shape, dtype=np.float64)
    for c in range(x.shape[1]):
        y[:, c] = x[:, c].astype(np.float64) * float(params["scale"][c]) + float(
            params["shift"][c])
    return y.astype(np.float32)


def select_kernel(backend: str) -> str:
    """One fused Numba pass, or two NumPy passes."""
    check_backend(backend)
    return "batchnorm_nc_fused" if backend == "numba" else "batchnorm_nc"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: a multiply and an add per element,
    into the output."""
    (in_shape,) = in_shapes
    return 2 * math.prod(in_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, *PARAMS)
    scale, shift = dense_bias(params["scale"]), dense_bias(params["shift"])
    if scale.ndim != 1 or scale.shape != shift.shape:
        raise ValueError(f"batchnorm: scale and shift must be (C,) each, got {scale.shape} and "
                         f"{shift.shape}")
    name = select_kernel(backend)
    run = batchnorm_nc_fused if name == "batchnorm_nc_fused" else batchnorm_nc

    def fn(x):
        return run(x, scale, shift)
    return Kernel(name, fn, {"channels": int(scale.shape[0])}, scale.nbytes + shift.nbytes)
