"""linear: y = x @ weight.T + bias. params weight (O, I), bias (O,) optional; input (N, I)."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend, csr_codebook_arrays, dense_bias, weight_info
from engine.kernels.dense import gemm, gemm_csr_scipy, to_scipy_csr
from engine.kernels.sparse import gemm_csr_codebook
from formats import CodebookTensor

NAME = "linear"


def infer_shape(attrs: dict, in_shape: tuple, params: dict[str, tuple]) -> tuple:
    """(I,) -> (O,)."""
    if "weight" not in params:
        raise ValueError("linear: missing param 'weight'")
    wshape = tuple(params["weight"])
    if len(wshape) != 2:
        raise ValueError(f"linear: weight must be (O, I), got {wshape}")
    if len(in_shape) != 1 or in_shape[0] != wshape[1]:
        raise ValueError(f"linear: input must be ({wshape[1]},) per sample for weight "
                         f"{wshape}, got {tuple(in_shape)} (flatten first?)")
    if "bias" in params and params["bias"] is not None and tuple(params["bias"]) != wshape[:1]:
        raise ValueError(f"linear: bias must be ({wshape[0]},), got {tuple(params['bias'])}")
    return (wshape[0],)


def reference(x: np.ndarray, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    y = np.asarray(x, np.float32) @ np.asarray(params["weight"], np.float32).T
    if params.get("bias") is not None:
        y = y + np.asarray(params["bias"], np.float32)
    return y


def select_kernel(weight, backend: str) -> str:
    """The kernel build() uses for this weight on this backend (a planner logs this)."""
    check_backend(backend)
    if not isinstance(weight, CodebookTensor):
        return "gemm"
    return "gemm_csr_codebook" if backend == "numba" else "gemm_csr_scipy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    weight = params["weight"]
    if len(weight.shape) != 2:
        raise ValueError(f"linear: weight must be (O, I), got {tuple(weight.shape)}")
    o, i = (int(s) for s in weight.shape)
    bias = dense_bias(params.get("bias"))
    name = select_kernel(weight, backend)

    if name == "gemm":
        w = np.ascontiguousarray(weight, dtype=np.float32)

        def fn(x):
            return gemm(x, w, bias)
    elif name == "gemm_csr_scipy":
        csr = to_scipy_csr(weight.indptr, weight.indices, weight.values(), (o, i))

        def fn(x):
            return gemm_csr_scipy(x, csr, bias)
    else:
        indptr, indices, codes, table = csr_codebook_arrays(weight)

        def fn(x):
            return gemm_csr_codebook(x, indptr, indices, codes, table, bias, check=False)
    return Kernel(name, fn, weight_info(weight))
