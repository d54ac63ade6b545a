"""Kernels: NumPy/SciPy paths (dense.py) and Numba paths on codebook indices (sparse.py, reading
the compressed weight as stored: csr.py).

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
    fn: Callable[..., np.ndarray] = field(repr=False)  # fn(*inputs) -> output
    info: dict = field(default_factory=dict)    # what a planner may log: density, shapes...
    resident: int = 0                           # bytes the prepared parameters hold

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        return self.fn(*xs)


def check_backend(backend: str) -> str:
    """Validate a concrete backend name ("auto" is resolved by the planner, not here)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "numba" and not HAVE_NUMBA:
        raise ValueError(f"backend 'numba' requested, but {WHY_NO_NUMBA}; use backend='numpy'")
    return backend


def dense_bias(bias) -> np.ndarray | None:
    """A bias as contiguous float32 (biases are stored raw; a codebook bias is expanded: it has
    one value per output channel, which the output itself holds anyway)."""
    if bias is None:
        return None
    dense = bias.to_dense() if hasattr(bias, "to_dense") else bias
    return np.ascontiguousarray(dense, dtype=np.float32)


def weight_info(weight, resident: int, sparse_bytes: int | None = None) -> dict:
    """What `info` reports about a layer's prepared weight: its resident bytes and, for a
    sparse kernel, what its sparse structure (row pointers, column indices, codes or values)
    costs per nonzero: under 4 bytes means less than the nonzeros' dense floats."""
    size = int(np.prod(weight.shape, dtype=np.int64))
    nnz = int(getattr(weight, "nnz", size))
    return {"shape": tuple(int(s) for s in weight.shape), "nonzeros": nnz,
            "density": nnz / size if size else 0.0, "resident_bytes": resident,
            "bytes_per_nonzero": sparse_bytes / nnz if sparse_bytes is not None and nnz
            else None}


__all__ = ["BACKENDS", "HAVE_NUMBA", "Kernel", "check_backend", "dense_bias", "get_threads",
           "set_threads", "weight_info"]
