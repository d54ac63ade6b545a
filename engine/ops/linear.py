"""linear: y = x @ weight.T + bias. params weight (O, I), bias (O,) optional; input (N, I)."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend, dense_bias, weight_info
from engine.kernels.csr import CsrCodebook
from engine.kernels.dense import gemm, gemm_csr_scipy, to_scipy_csr
from engine.kernels.sparse import gemm_csr_codebook
from engine.ops.attrs import check_attrs, check_params
from formats import CodebookTensor

NAME = "linear"
ATTRS = ()
INPUTS = (1, 1)  # input values read
PARAMS = ("weight",), ("bias",)  # required, optional


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(I,) -> (O,)."""
    (in_shape,) = in_shapes
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, *PARAMS)
    wshape = tuple(params["weight"])
    if len(wshape) != 2:
        raise ValueError(f"linear: weight must be (O, I), got {wshape}")
    if len(in_shape) != 1 or in_shape[0] != wshape[1]:
        raise ValueError(f"linear: input must be ({wshape[1]},) per sample for weight "
                         f"{wshape}, got {tuple(in_shape)} (flatten first?)")
    if params.get("bias") is not None and tuple(params["bias"]) != wshape[:1]:
        raise ValueError(f"linear: bias must be ({wshape[0]},), got {tuple(params['bias'])}")
    return (wshape[0],)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    (x,) = xs
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


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(multiply-adds, workspace bytes) per sample: the sparse paths transpose x and y."""
    (in_shape,) = in_shapes
    weight = params["weight"]
    (o, i), (n_in,), (n_out,) = weight.shape, in_shape, out_shape
    if select_kernel(weight, backend) == "gemm":
        return o * i, 0
    return weight.nnz + n_in + n_out, 4 * (n_in + n_out)


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    check_attrs(NAME, attrs, ATTRS)
    check_params(NAME, params, *PARAMS)
    weight = params["weight"]
    if len(weight.shape) != 2:
        raise ValueError(f"linear: weight must be (O, I), got {tuple(weight.shape)}")
    o, i = (int(s) for s in weight.shape)
    bias = dense_bias(params.get("bias"))
    name = select_kernel(weight, backend)

    if name == "gemm":
        w = np.ascontiguousarray(weight, dtype=np.float32)
        resident, sparse = w.nbytes, None

        def fn(x):
            return gemm(x, w, bias)
    elif name == "gemm_csr_scipy":
        csr = to_scipy_csr(weight.indptr, weight.indices, CsrCodebook.of(weight).values(), (o, i))
        resident = sparse = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes

        def fn(x):
            return gemm_csr_scipy(x, csr, bias)
    else:
        w = CsrCodebook.of(weight)
        resident, sparse = w.nbytes, w.sparse_bytes

        def fn(x):
            return gemm_csr_codebook(x, w, bias)
    info = weight_info(weight, resident, sparse)  # the weight alone, without the bias
    resident += 0 if bias is None else bias.nbytes
    return Kernel(name, fn, info, resident)
