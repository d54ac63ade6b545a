"""conv2d: NCHW convolution, PyTorch conventions. attrs {"stride": [sh, sw], "padding": [ph, pw]}
(ints accepted; "dilation" and "groups" only 1 for now); params weight (O, C, KH, KW), bias (O,)
optional."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend, dense_bias, weight_info
from engine.kernels.csr import CsrCodebook
from engine.kernels.dense import conv2d_nchw_csr_scipy, conv2d_nchw_im2col, to_scipy_csr
from engine.kernels.sparse import conv2d_nchw_csr_codebook, conv_out_size
from engine.ops.attrs import check_attrs, check_params, pair
from formats import CodebookTensor

NAME = "conv2d"
ATTRS = ("stride", "padding", "dilation", "groups")
INPUTS = (1, 1)  # input values read
PARAMS = ("weight",), ("bias",)  # required, optional


def geometry(attrs: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """((sh, sw), (ph, pw)) from attrs; groups and dilation other than 1 are refused."""
    check_attrs(NAME, attrs, ATTRS)
    for key in ("groups", "dilation"):
        if key in attrs and pair(attrs[key], f"conv2d: {key}", 1) != (1, 1):
            raise ValueError(f"conv2d: {key}={attrs[key]!r} not supported (only 1)")
    return (pair(attrs.get("stride", 1), "conv2d: stride", 1),
            pair(attrs.get("padding", 0), "conv2d: padding", 0))


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (O, OH, OW)."""
    (in_shape,) = in_shapes
    (sh, sw), (ph, pw) = geometry(attrs)
    check_params(NAME, params, *PARAMS)
    wshape = tuple(params["weight"])
    if len(wshape) != 4:
        raise ValueError(f"conv2d: weight must be (O, C, KH, KW), got {wshape}")
    o, c, kh, kw = wshape
    if len(in_shape) != 3:
        raise ValueError(f"conv2d: input must be (C, H, W) per sample, got {tuple(in_shape)}")
    if in_shape[0] != c:
        raise ValueError(f"conv2d: input has {in_shape[0]} channels, weight {wshape} expects {c}")
    if params.get("bias") is not None and tuple(params["bias"]) != (o,):
        raise ValueError(f"conv2d: bias must be ({o},), got {tuple(params['bias'])}")
    oh, ow = conv_out_size(in_shape[1], kh, sh, ph), conv_out_size(in_shape[2], kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: input {tuple(in_shape)} with padding ({ph}, {pw}) is "
                         f"smaller than the {kh}x{kw} kernel")
    return (o, oh, ow)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: one einsum per kernel tap over a strided view of the padded input."""
    (x,) = xs
    (sh, sw), (ph, pw) = geometry(attrs)
    w = np.asarray(params["weight"], dtype=np.float32)
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(wd, kw, sw, pw)
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, o, oh, ow), dtype=np.float32)
    for ky in range(kh):
        for kx in range(kw):
            tap = xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", tap, w[:, :, ky, kx])
    if params.get("bias") is not None:
        y += np.asarray(params["bias"], np.float32)[:, None, None]
    return y


def used_columns(weight: CodebookTensor):
    """(sorted columns holding a nonzero, each nonzero's index among them) when at most half
    the columns are used, else (None, the stored indices): the SciPy path then builds only
    those im2col rows. Above half, gathering rows costs more than copying all of them (LeNet-5
    conv2 at 79%: 59 -> 68 us at batch 1)."""
    used = np.unique(weight.indices)
    if 2 * len(used) > weight.row_size:
        return None, weight.indices
    return used.astype(np.intp), np.searchsorted(used, weight.indices).astype(np.int32)


def select_kernel(weight, backend: str) -> str:
    """The kernel build() uses for this weight on this backend (a planner logs this)."""
    check_backend(backend)
    if not isinstance(weight, CodebookTensor):
        return "conv2d_nchw_im2col"
    return "conv2d_nchw_csr_codebook" if backend == "numba" else "conv2d_nchw_csr_scipy"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(multiply-adds or element moves, workspace bytes) per sample for the chosen kernel."""
    (in_shape,) = in_shapes
    (sh, sw), (ph, pw) = geometry(attrs)
    weight = params["weight"]
    c, h, w = in_shape
    o, oh, ow = out_shape
    kh, kw = (int(s) for s in weight.shape[2:])
    padded = c * (h + 2 * ph) * (w + 2 * pw)
    name = select_kernel(weight, backend)
    if name == "conv2d_nchw_csr_codebook":  # a padded, batch-last copy of the input
        return weight.nnz * oh * ow + o * oh * ow + padded, 4 * padded
    # im2col: the padded input, its columns (only the used ones on the SciPy path), the product
    if isinstance(weight, CodebookTensor):
        used = used_columns(weight)[0] if name == "conv2d_nchw_csr_scipy" else None
        nnz, rows = weight.nnz, c * kh * kw if used is None else len(used)
    else:
        nnz, rows = o * c * kh * kw, c * kh * kw
    cols = rows * oh * ow
    return nnz * oh * ow + cols + padded, 4 * (padded + cols + o * oh * ow)


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    (sh, sw), (ph, pw) = geometry(attrs)
    check_params(NAME, params, *PARAMS)
    weight = params["weight"]
    if len(weight.shape) != 4:
        raise ValueError(f"conv2d: weight must be (O, C, KH, KW), got {tuple(weight.shape)}")
    o, c, kh, kw = (int(s) for s in weight.shape)
    bias = dense_bias(params.get("bias"))
    name = select_kernel(weight, backend)

    if name == "conv2d_nchw_im2col":
        w = np.ascontiguousarray(weight, dtype=np.float32)
        resident, sparse = w.nbytes, None

        def fn(x):
            return conv2d_nchw_im2col(x, w, bias, (sh, sw), (ph, pw))
    elif name == "conv2d_nchw_csr_scipy":
        used, columns = used_columns(weight)
        csr = to_scipy_csr(weight.indptr, columns, CsrCodebook.of(weight).values(),
                           (o, c * kh * kw if used is None else len(used)))
        resident = sparse = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
        resident += 0 if used is None else used.nbytes

        def fn(x):
            return conv2d_nchw_csr_scipy(x, csr, bias, kh, kw, (sh, sw), (ph, pw), used)
    else:
        w = CsrCodebook.of(weight)
        resident, sparse = w.nbytes, w.sparse_bytes

        def fn(x):
            return conv2d_nchw_csr_codebook(x, w, bias, kh, kw, (sh, sw), (ph, pw))
    info = weight_info(weight, resident, sparse)  # the weight alone, without the bias
    resident += 0 if bias is None else bias.nbytes
    return Kernel(name, fn, info, resident)
