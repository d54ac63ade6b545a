"""softmax along one axis, numerically stable (max subtracted first). attrs {"axis": 1}."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend

NAME = "softmax"


def _axis(attrs: dict, ndim: int) -> int:
    axis = int(attrs.get("axis", 1))
    if not -ndim <= axis < ndim or axis % ndim == 0:
        raise ValueError(f"softmax: axis={axis} out of range for a {ndim}-d input "
                         f"(batch dim 0 excluded)")
    return axis % ndim


def infer_shape(attrs: dict, in_shape: tuple, params: dict[str, tuple]) -> tuple:
    _axis(attrs, len(in_shape) + 1)
    return tuple(in_shape)


def reference(x: np.ndarray, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    axis = _axis(attrs, x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "softmax_numpy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    name = select_kernel(backend)

    def fn(x):
        axis = _axis(attrs, x.ndim)
        e = x - x.max(axis=axis, keepdims=True)
        np.exp(e, out=e)
        e /= e.sum(axis=axis, keepdims=True)
        return e
    return Kernel(name, fn)
