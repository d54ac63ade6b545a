"""conv2d: NCHW convolution, PyTorch/ONNX conventions. attrs "stride" (1), "padding" (0: an int,
[ph, pw] or [top, left, bottom, right]), "dilation" (1), "groups" (1); params weight
(O, C/groups, KH, KW), bias (O,) optional. Depthwise: groups = C (O = m*C, m filters each).

Which kernel runs (select_kernel), by weight and backend:

    depthwise (groups = C > 1)   codebook: numba dwconv2d_nchw_csr_codebook
                                           numpy dwconv2d_nchw_shifted (the nonzero taps)
                                 dense:    numba dwconv2d_nchw_direct, numpy the shifted one
    pointwise (1x1, unpadded)    codebook: numba conv2d_1x1_nchw_spmm_codebook
    any other                    codebook: numba conv2d_nchw_csr_codebook
    pointwise and any other      codebook: numpy conv2d_nchw_csr_scipy (groups: block diagonal)
                                 dense:    conv2d_nchw_im2col on both (BLAS, per group)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.kernels import Kernel, check_backend, dense_bias, weight_info
from engine.kernels.csr import CsrCodebook
from engine.kernels.dense import (
    DW_BLOCK_BYTES,
    DepthwiseTaps,
    conv2d_nchw_csr_scipy,
    conv2d_nchw_im2col,
    dwconv2d_nchw_shifted,
    to_scipy_csr,
)
from engine.kernels.sparse import (
    CONV_ACC_FLOATS,
    CONV_RUN_MIN,
    SPMM_BLOCK,
    conv2d_1x1_nchw_spmm_codebook,
    conv2d_nchw_csr_codebook,
    conv_out_size,
    dwconv2d_nchw_csr_codebook,
    phase_shape,
)
from engine.ops.attrs import check_attrs, check_params, inputs, integer, padding, pair
from formats import CodebookTensor

NAME = "conv2d"
ATTRS = ("stride", "padding", "dilation", "groups")
INPUTS = (1, 1)  # input values read
PARAMS = ("weight",), ("bias",)  # required, optional


@dataclass(frozen=True)
class Geometry:
    stride: tuple[int, int]                 # (sh, sw)
    padding: tuple[int, int, int, int]      # (top, left, bottom, right)
    dilation: tuple[int, int]               # (dh, dw)
    groups: int

    def out_size(self, h: int, w: int, kh: int, kw: int) -> tuple[int, int]:
        (sh, sw), (pt, pl, pb, pr), (dh, dw) = self.stride, self.padding, self.dilation
        return conv_out_size(h, kh, sh, pt, pb, dh), conv_out_size(w, kw, sw, pl, pr, dw)


def geometry(attrs: dict) -> Geometry:
    """The attributes, each checked (integers in range; padding in any of its three forms)."""
    check_attrs(NAME, attrs, ATTRS)
    return Geometry(pair(attrs.get("stride", 1), "conv2d: stride", 1),
                    padding(attrs.get("padding", 0), "conv2d: padding"),
                    pair(attrs.get("dilation", 1), "conv2d: dilation", 1),
                    integer(attrs.get("groups", 1), "conv2d: groups", 1))


def _weight_shape(wshape) -> tuple[int, int, int, int]:
    wshape = tuple(int(s) for s in wshape)
    if len(wshape) != 4:
        raise ValueError(f"conv2d: weight must be (O, C/groups, KH, KW), got {wshape}")
    return wshape  # type: ignore[return-value]


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (O, OH, OW)."""
    inputs(NAME, in_shapes, *INPUTS)
    (in_shape,) = in_shapes
    g = geometry(attrs)
    check_params(NAME, params, *PARAMS)
    o, cg, kh, kw = _weight_shape(params["weight"])
    if len(in_shape) != 3:
        raise ValueError(f"conv2d: input must be (C, H, W) per sample, got {tuple(in_shape)}")
    c, h, w = in_shape
    if c != cg * g.groups:
        raise ValueError(f"conv2d: input has {c} channels, weight {(o, cg, kh, kw)} with "
                         f"groups={g.groups} expects {cg * g.groups}")
    if o % g.groups:
        raise ValueError(f"conv2d: groups={g.groups} does not divide the weight's {o} output "
                         f"channels")
    if params.get("bias") is not None and tuple(params["bias"]) != (o,):
        raise ValueError(f"conv2d: bias must be ({o},), got {tuple(params['bias'])}")
    oh, ow = g.out_size(h, w, kh, kw)
    if oh < 1 or ow < 1:
        dil = "" if g.dilation == (1, 1) else f" dilated by {g.dilation}"
        raise ValueError(f"conv2d: input {tuple(in_shape)} with padding {g.padding} is "
                         f"smaller than the {kh}x{kw} kernel{dil}")
    return (o, oh, ow)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle, written apart from every kernel: per group, one einsum per kernel tap over a
    dilated, strided view of the padded input."""
    (x,) = xs
    g = geometry(attrs)
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = g.stride, g.padding, g.dilation
    w = np.asarray(params["weight"], dtype=np.float32)
    o, cg, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    y = np.zeros((n, o, oh, ow), dtype=np.float32)
    og = o // g.groups
    for gi in range(g.groups):
        xg, wg = xp[:, gi * cg:(gi + 1) * cg], w[gi * og:(gi + 1) * og]
        for ky in range(kh):
            for kx in range(kw):
                tap = xg[:, :, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                         kx * dw:kx * dw + sw * (ow - 1) + 1:sw]
                y[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", tap, wg[:, :, ky, kx])
    if params.get("bias") is not None:
        y += np.asarray(params["bias"], np.float32)[:, None, None]
    return y


def kind(attrs: dict, wshape) -> str:
    """'depthwise' (groups = C > 1: one input channel per filter), 'pointwise' (1x1 and
    unpadded) or 'general'."""
    g = geometry(attrs)
    _, cg, kh, kw = _weight_shape(wshape)
    if cg == 1 and g.groups > 1:
        return "depthwise"
    if (kh, kw) == (1, 1) and not any(g.padding):
        return "pointwise"
    return "general"


def select_kernel(attrs: dict, weight, backend: str) -> str:
    """The kernel build() uses for this weight on this backend (a planner logs this)."""
    check_backend(backend)
    k = kind(attrs, weight.shape)
    if not isinstance(weight, CodebookTensor):
        if k != "depthwise":
            return "conv2d_nchw_im2col"
        small = int(weight.shape[2]) * int(weight.shape[3]) <= 1 << 16  # taps coded in uint16
        return "dwconv2d_nchw_direct" if backend == "numba" and small else "dwconv2d_nchw_shifted"
    if backend == "numpy":
        return "dwconv2d_nchw_shifted" if k == "depthwise" else "conv2d_nchw_csr_scipy"
    return {"depthwise": "dwconv2d_nchw_csr_codebook",
            "pointwise": "conv2d_1x1_nchw_spmm_codebook"}.get(k, "conv2d_nchw_csr_codebook")


def used_columns(weight: CodebookTensor, columns=None, width: int | None = None):
    """(sorted columns holding a nonzero, each nonzero's index among them) when at most half
    the columns are used, else (None, the columns): the SciPy path then builds only those
    im2col rows. Above half, gathering rows costs more than copying all of them (LeNet-5 conv2
    at 79%: 59 -> 68 us at batch 1). `columns` of a grouped weight: the nonzeros' columns in
    the block-diagonal matrix `width` = C*KH*KW wide (default: as stored, row_size wide)."""
    columns = weight.indices if columns is None else columns
    width = weight.row_size if width is None else width
    used = np.unique(columns)
    if 2 * len(used) > width:
        return None, columns
    return used.astype(np.intp), np.searchsorted(used, columns).astype(np.int32)


def block_columns(weight: CodebookTensor, groups: int) -> np.ndarray:
    """Each nonzero's column in the block-diagonal (O, C*KH*KW) matrix: row o's columns
    shifted by its group's g*C/groups*KH*KW (still only the nonzeros: the SciPy path's one
    product for every group)."""
    if groups == 1:
        return weight.indices
    rows = np.repeat(np.arange(weight.rows, dtype=np.int64), np.diff(weight.indptr))
    return (rows // (weight.rows // groups)) * weight.row_size + weight.indices


def _tap_channels(weight: CodebookTensor) -> int:
    """The most output channels any one tap of a depthwise weight holds."""
    return int(np.bincount(np.asarray(weight.indices, np.intp)).max()) if weight.nnz else 0


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(multiply-adds and element moves, workspace bytes) per sample for the chosen kernel."""
    (in_shape,) = in_shapes
    g = geometry(attrs)
    weight = params["weight"]
    c, h, w = in_shape
    o, oh, ow = out_shape
    _, cg, kh, kw = _weight_shape(weight.shape)
    px = oh * ow
    pt, pl, pb, pr = g.padding
    padded = c * (h + pt + pb) * (w + pl + pr)
    nnz = weight.nnz if isinstance(weight, CodebookTensor) else o * cg * kh * kw
    name = select_kernel(attrs, weight, backend)
    if name == "conv2d_nchw_csr_codebook":  # the padded input's phase planes, batch innermost
        sh, sw, hq, wq = phase_shape(h + pt + pb, w + pl + pr, *g.stride, oh, ow)
        planes = c * sh * hq * sw * wq
        rows = 1 if ow >= CONV_RUN_MIN else max(1, min(oh, CONV_ACC_FLOATS // wq))
        return nnz * px + o * px + planes, 4 * (planes + (rows - 1) * wq + ow)
    if name == "conv2d_1x1_nchw_spmm_codebook":  # a strided conv first subsamples the input
        strided = c * px if g.stride != (1, 1) else 0
        return nnz * px + o * px + strided, 4 * (strided + SPMM_BLOCK)
    if name in ("dwconv2d_nchw_csr_codebook", "dwconv2d_nchw_direct"):  # in place
        return nnz * px + o * px, 0
    if name == "dwconv2d_nchw_shifted":
        full = not isinstance(weight, CodebookTensor) or weight.nnz == weight.size
        if full and o == c:  # every tap on every channel: plain slices in channel blocks
            block = min(o, max(1, DW_BLOCK_BYTES // (4 * px)))  # one block's product
            return 2 * nnz * px + o * px, 4 * block * px
        # a tap's channels gathered, multiplied, added and scattered back
        return 3 * nnz * px + o * px, 4 * 3 * (o if full else _tap_channels(weight)) * px
    # im2col: the padded input, its columns (only the used ones on the SciPy path; one group's
    # at a time for dense), the product
    if name == "conv2d_nchw_csr_scipy":  # every group in one product
        used = used_columns(weight, block_columns(weight, g.groups), c * kh * kw)[0]
        rows = c * kh * kw if used is None else len(used)
        return nnz * px + rows * px + padded, 4 * (padded + rows * px + o * px)
    group = cg * kh * kw * px
    return nnz * px + g.groups * group + padded, 4 * (padded // g.groups + group + o * px)


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    g = geometry(attrs)
    check_params(NAME, params, *PARAMS)
    weight = params["weight"]
    o, cg, kh, kw = _weight_shape(weight.shape)
    if o % g.groups:
        raise ValueError(f"conv2d: groups={g.groups} does not divide the weight's {o} output "
                         f"channels")
    bias = dense_bias(params.get("bias"))
    name = select_kernel(attrs, weight, backend)
    stride, pad, dil, groups = g.stride, g.padding, g.dilation, g.groups
    sparse = None

    if name == "conv2d_nchw_im2col":
        w = np.ascontiguousarray(weight, dtype=np.float32)
        resident = w.nbytes

        def fn(x):
            return conv2d_nchw_im2col(x, w, bias, stride, pad, dil, groups)
    elif name == "conv2d_nchw_csr_scipy":
        width = groups * cg * kh * kw  # C*KH*KW
        used, columns = used_columns(weight, block_columns(weight, groups), width)
        csr = to_scipy_csr(weight.indptr, columns, CsrCodebook.of(weight).values(),
                           (o, width if used is None else len(used)))
        resident = sparse = csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes
        resident += 0 if used is None else used.nbytes

        def fn(x):
            return conv2d_nchw_csr_scipy(x, csr, bias, kh, kw, stride, pad, used, dil)
    elif name == "dwconv2d_nchw_shifted":
        if isinstance(weight, CodebookTensor):
            w = CsrCodebook.of(weight)
            taps = DepthwiseTaps.of_csr(o, groups, kh, kw, w.indptr, w.cols, w.values())
            resident = sparse = taps.nbytes
        else:
            taps = DepthwiseTaps.of_dense(np.asarray(weight, np.float32), groups)
            resident = taps.nbytes

        def fn(x):
            return dwconv2d_nchw_shifted(x, taps, bias, stride, pad, dil)
    else:  # the Numba kernels on codes (a dense depthwise weight: each tap its own code)
        dense = not isinstance(weight, CodebookTensor)
        w = CsrCodebook.of_dense(weight) if dense else CsrCodebook.of(weight)
        resident, sparse = w.nbytes, None if dense else w.sparse_bytes
        if name == "conv2d_nchw_csr_codebook":
            def fn(x):
                return conv2d_nchw_csr_codebook(x, w, bias, kh, kw, stride, pad, dil, groups)
        elif name == "conv2d_1x1_nchw_spmm_codebook":
            def fn(x):
                return conv2d_1x1_nchw_spmm_codebook(x, w, bias, stride, groups)
        else:
            def fn(x):
                return dwconv2d_nchw_csr_codebook(x, w, bias, kh, kw, stride, pad, dil)
    info = weight_info(weight, resident, sparse)  # the weight alone, without the bias
    resident += 0 if bias is None else bias.nbytes
    return Kernel(name, fn, info, resident)
