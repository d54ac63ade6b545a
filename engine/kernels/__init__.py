"""Kernels: NumPy/SciPy paths (dense.py) and Numba paths on codebook indices (sparse.py).

`Kernel` is what an op's ``build`` returns: a prepared, named callable for one layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.kernels._jit import HAVE_NUMBA, WHY_NO_NUMBA, get_threads, set_threads

BACKENDS = ("numba", "numpy")


@dataclass(frozen=True)
class Kernel:
    """One layer's prepared computation: all per-layer work is done, calling only computes."""

    name: str                                   # e.g. "conv2d_nchw_csr_codebook"
    fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    info: dict = field(default_factory=dict)    # what a planner may log: density, shapes...

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fn(x)


def check_backend(backend: str) -> str:
    """Validate a concrete backend name ("auto" is resolved by the planner, not here)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "numba" and not HAVE_NUMBA:
        raise ValueError(f"backend 'numba' requested, but {WHY_NO_NUMBA}; use backend='numpy'")
    return backend


def dense_bias(bias) -> np.ndarray | None:
    """A bias as contiguous float32 (biases are stored raw; a codebook bias is expanded)."""
    if bias is None:
        return None
    dense = bias.to_dense() if hasattr(bias, "to_dense") else bias
    return np.ascontiguousarray(dense, dtype=np.float32)


def csr_codebook_arrays(weight) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, codes, row table) of a CodebookTensor, in the kernels' dtypes.
    Validated once here, so each call of a kernel can skip its O(nnz) range scans."""
    weight.validate()
    return (np.ascontiguousarray(weight.indptr, dtype=np.int64),
            np.ascontiguousarray(weight.indices, dtype=np.int32),
            np.ascontiguousarray(weight.codes), weight.row_table())


def weight_info(weight) -> dict:
    """What a planner logs about a layer's weight."""
    return {"shape": tuple(int(s) for s in weight.shape),
            "density": weight.density if hasattr(weight, "density") else 1.0}


__all__ = ["BACKENDS", "HAVE_NUMBA", "Kernel", "check_backend", "csr_codebook_arrays",
           "dense_bias", "get_threads", "set_threads", "weight_info"]
