"""identity: the input value itself (dropout at inference maps to it); no attrs, no params.
Nothing is copied: no kernel writes into a value it reads."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params

NAME = "identity"
ATTRS = ()
INPUTS = (1, 1)  # input values read


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    return tuple(in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
    return np.array(x, copy=True)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "identity"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element operations, workspace bytes) per sample: none."""
    return 0, 0


def _same(x):
    return x


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, ())
    return Kernel(select_kernel(backend), _same)
