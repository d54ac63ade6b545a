"""relu: max(x, 0), elementwise; no attrs, no params."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend

NAME = "relu"


def infer_shape(attrs: dict, in_shape: tuple, params: dict[str, tuple]) -> tuple:
    return tuple(in_shape)


def reference(x: np.ndarray, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    return np.where(x > 0, x, np.zeros_like(x))


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "relu_numpy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    def fn(x):
        return np.maximum(x, 0, dtype=x.dtype)
    return Kernel(select_kernel(backend), fn)
