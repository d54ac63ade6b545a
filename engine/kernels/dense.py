"""NumPy/SciPy kernels: dense convolution by im2col + BLAS (per group), depthwise convolution
by shifted slices, pooling, GEMM, and the scipy.sparse path that runs compressed layers when
Numba is not available."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from engine.kernels.sparse import conv_out_size, pads4


def pair(v, what: str = "value") -> tuple[int, int]:
    """An int or a 2-sequence of ints -> (a, b)."""
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    try:
        a, b = v
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}") from None


def _check_x4(x, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"{what}: x must be an (N, C, H, W) array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    return x


def _geometry(x_shape, kh: int, kw: int, stride, pad, dilation, what: str):
    """((sh, sw), (top, left, bottom, right), (dh, dw), OH, OW), refusing an output of nothing."""
    (sh, sw), (dh, dw), p = pair(stride, "stride"), pair(dilation, "dilation"), pads4(pad)
    h, w = x_shape[2:]
    oh, ow = conv_out_size(h, kh, sh, p[0], p[2], dh), conv_out_size(w, kw, sw, p[1], p[3], dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{w} with padding {p} is smaller than the "
                         f"{kh}x{kw} kernel dilated by ({dh}, {dw})")
    return (sh, sw), p, (dh, dw), oh, ow


def _windows(x: np.ndarray, kh: int, kw: int, stride, pad, dilation, what: str):
    """(N, C, OH, OW, KH, KW) strided view of the padded input (one copy when padded), OH, OW."""
    (sh, sw), (pt, pl, pb, pr), (dh, dw), oh, ow = _geometry(x.shape, kh, kw, stride, pad,
                                                             dilation, what)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr))) if pt or pl or pb or pr else x
    win = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    return win[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw, ::dh, ::dw], oh, ow


def _pointwise_view(x: np.ndarray, kh: int, kw: int, stride, pad) -> np.ndarray | None:
    """The (C, H*W) columns of a 1x1, stride-1, unpadded conv of one image: x itself."""
    if (kh, kw) == (1, 1) and x.shape[0] == 1 and pair(stride, "stride") == (1, 1) \
            and not any(pads4(pad)):
        return x.reshape(x.shape[1], -1)
    return None


def im2col(x: np.ndarray, kh: int, kw: int, stride=1, pad=0, dilation=1) -> np.ndarray:
    """(N, C, H, W) -> columns (C*KH*KW, N*OH*OW); row order (c, ky, kx) like a flattened
    (O, C, KH, KW) weight, column order (n, oy, ox). One strided view and one copy (none for a
    1x1, stride-1, unpadded conv of one image). pad: (ph, pw) or (top, left, bottom, right)."""
    _check_x4(x, "im2col")
    view = _pointwise_view(x, kh, kw, stride, pad)
    if view is not None:
        return view
    n, c = x.shape[:2]
    win, oh, ow = _windows(x, kh, kw, stride, pad, dilation, "im2col")
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * oh * ow)


def _cols_to_nchw(yc: np.ndarray, n: int, oh: int, ow: int) -> np.ndarray:
    """(O, N*OH*OW) -> contiguous (N, O, OH, OW)."""
    return np.ascontiguousarray(yc.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3))


def conv2d_nchw_im2col(x, weight, bias=None, stride=1, pad=0, dilation=1,
                       groups: int = 1) -> np.ndarray:
    """Dense convolution: per group, weight (O/groups, C/groups*KH*KW) times that group's im2col
    columns (one BLAS product each; one group's columns exist at a time)."""
    what = "conv2d_nchw_im2col"
    _check_x4(x, what)
    o, cg, kh, kw = weight.shape
    n, c = x.shape[:2]
    if groups < 1 or c != cg * groups or o % groups:
        raise ValueError(f"{what}: input has {c} channels; weight {weight.shape} with "
                         f"groups={groups} expects {cg * groups}, and O divisible by groups")
    *_, oh, ow = _geometry(x.shape, kh, kw, stride, pad, dilation, what)
    if groups == 1:
        y = _cols_to_nchw(weight.reshape(o, -1) @ im2col(x, kh, kw, stride, pad, dilation),
                          n, oh, ow)
    else:
        og = o // groups
        y = np.empty((n, o, oh, ow), dtype=np.result_type(x.dtype, weight.dtype))
        for g in range(groups):
            cols = im2col(x[:, g * cg:(g + 1) * cg], kh, kw, stride, pad, dilation)
            yc = weight[g * og:(g + 1) * og].reshape(og, -1) @ cols  # (O/groups, N*OH*OW)
            y[:, g * og:(g + 1) * og] = yc.reshape(og, n, oh, ow).transpose(1, 0, 2, 3)
    if bias is not None:
        y += bias.reshape(o, 1, 1)
    return y


def im2col_rows(x: np.ndarray, kh: int, kw: int, stride, pad, rows: np.ndarray,
                dilation=1) -> np.ndarray:
    """Only the listed rows of im2col(x, ...): (len(rows), N*OH*OW), rows in (c, ky, kx) order
    numbering. A sparse filter bank reads few of the C*KH*KW rows; the others are never built."""
    n = x.shape[0]
    win, oh, ow = _windows(x, kh, kw, stride, pad, dilation, "im2col_rows")
    ci, tap = np.divmod(np.asarray(rows, dtype=np.intp), kh * kw)
    ky, kx = np.divmod(tap, kw)
    return win[:, ci, :, :, ky, kx].reshape(len(rows), n * oh * ow)  # (U, N, OH, OW): one gather


def conv2d_nchw_csr_scipy(x, csr, bias, kh, kw, stride=1, pad=0, used=None,
                          dilation=1) -> np.ndarray:
    """Sparse convolution without Numba: scipy csr (O, C*KH*KW) @ im2col columns. Grouped
    convolutions come as one block-diagonal csr (row o's columns shifted by its group's
    g*C/groups*KH*KW: still only the nonzeros). With `used` (the sorted weight columns that
    hold a nonzero) csr is (O, len(used)) and only those rows of im2col are built: an empty
    filter bank costs its bias, not C*KH*KW copies of the input."""
    _check_x4(x, "conv2d_nchw_csr_scipy")
    o, k = csr.shape
    c = x.shape[1]
    if (c * kh * kw if used is None else len(used)) != k or (
            used is not None and len(used) and used[-1] >= c * kh * kw):
        raise ValueError(f"conv2d_nchw_csr_scipy: weight rows hold {k} values, input needs "
                         f"C*KH*KW = {c}*{kh}*{kw} = {c * kh * kw}")
    n = x.shape[0]
    *_, oh, ow = _geometry(x.shape, kh, kw, stride, pad, dilation, "conv2d_nchw_csr_scipy")
    cols = (im2col(x, kh, kw, stride, pad, dilation) if used is None
            else im2col_rows(x, kh, kw, stride, pad, used, dilation))
    yc = np.asarray(csr @ cols, dtype=np.float32)  # (O, N*OH*OW)
    if bias is not None:
        yc += bias.reshape(o, 1)
    return _cols_to_nchw(yc, n, oh, ow)


# ---------------------------------------------------------------------------------------------
# depthwise convolution by shifted slices: y += w[tap] * (the input shifted by the tap), clipped
# to where the input is inside the image (no padded copy, no KH*KW-fold im2col)


@dataclass(frozen=True, eq=False)
class DepthwiseTaps:
    """A depthwise weight (O, 1, KH, KW), O = mult * C, as its taps: for each (ky, kx) that
    holds a nonzero, the output channels holding it (`outs`; None: all), the input channel each
    reads (`ins` = outs // mult; None: the same as outs) and the values. A sparse weight keeps
    only its nonzeros (int32 + float32 each); a dense one (every tap on every channel) is
    run in channel blocks that stay in cache."""

    rows: int
    mult: int
    kh: int
    kw: int
    taps: tuple  # ((ky, kx, outs, ins, vals), ...)

    @classmethod
    def of_csr(cls, rows: int, channels: int, kh: int, kw: int, indptr, cols,
               vals) -> DepthwiseTaps:
        """From CSR arrays: row o holds its taps ky*KW + kx (validated, below KH*KW)."""
        if channels < 1 or rows % channels:
            raise ValueError(f"depthwise: {rows} output channels is not a multiple of the "
                             f"{channels} input channels")
        mult = rows // channels
        row_of = np.repeat(np.arange(rows, dtype=np.int32), np.diff(indptr))
        cols = np.asarray(cols, dtype=np.intp)
        vals = np.asarray(vals, dtype=np.float32)
        taps = []
        for tap in np.unique(cols):
            at = np.flatnonzero(cols == tap)
            outs = row_of[at]
            ins = None if mult == 1 else (outs // mult).astype(np.int32)
            taps.append((int(tap) // kw, int(tap) % kw, None if len(outs) == rows else outs,
                         ins, vals[at]))
        return cls(rows, mult, kh, kw, tuple(taps))

    @classmethod
    def of_dense(cls, weight: np.ndarray, channels: int) -> DepthwiseTaps:
        o, _, kh, kw = weight.shape
        w = np.ascontiguousarray(weight, dtype=np.float32).reshape(o, kh * kw)
        return cls.of_csr(o, channels, kh, kw, np.arange(o + 1) * (kh * kw),
                          np.tile(np.arange(kh * kw), o), w.reshape(-1))

    @property
    def nbytes(self) -> int:
        return sum(sum(a.nbytes for a in t[2:] if a is not None) for t in self.taps)


def _clip(size: int, off: int, stride: int, out: int) -> tuple[int, int]:
    """Outputs [lo, hi) whose input index out_index * stride + off is inside 0..size-1."""
    lo = 0 if off >= 0 else -(off // stride)  # ceil(-off / stride)
    hi = min(out, (size - 1 - off) // stride + 1) if off < size else 0
    return lo, max(lo, hi)


# a dense depthwise layer runs in blocks of channels whose output (and one tap's product) fit
# in L2: 1.2-1.4x over whole-tensor passes on MobileNetV2's 3x3 layers
DW_BLOCK_BYTES = 1 << 18


def dwconv2d_nchw_shifted(x, taps: DepthwiseTaps, bias, stride=1, pad=0,
                          dilation=1) -> np.ndarray:
    """Depthwise convolution (groups = C) as a sum over taps of shifted input slices times the
    tap's values, each clipped to the outputs whose input is inside the image. Returns
    (N, O, OH, OW) float32."""
    what = "dwconv2d_nchw_shifted"
    _check_x4(x, what)
    n, c, h, w = x.shape
    if taps.rows != taps.mult * c:
        raise ValueError(f"{what}: input has {c} channels; the weight has {taps.rows} output "
                         f"channels, {taps.mult} per input channel")
    kh, kw, o = taps.kh, taps.kw, taps.rows
    (sh, sw), (pt, pl, _, _), (dh, dw), oh, ow = _geometry(x.shape, kh, kw, stride, pad,
                                                           dilation, what)
    y = np.empty((n, o, oh, ow), dtype=np.float32)
    y[...] = 0.0 if bias is None else np.asarray(bias, np.float32).reshape(o, 1, 1)
    dense = taps.mult == 1 and all(t[2] is None for t in taps.taps)
    block = max(1, DW_BLOCK_BYTES // (4 * n * oh * ow)) if dense else o
    tmp = np.empty((n, min(block, o), oh, ow), dtype=np.float32) if dense else None
    for b0 in range(0, o, block):
        b1 = min(o, b0 + block)
        for ky, kx, outs, ins, vals in taps.taps:
            dy, dx = ky * dh - pt, kx * dw - pl
            (a, b), (left, right) = _clip(h, dy, sh, oh), _clip(w, dx, sw, ow)
            if a == b or left == right:
                continue
            src = (slice(a * sh + dy, (b - 1) * sh + dy + 1, sh),
                   slice(left * sw + dx, (right - 1) * sw + dx + 1, sw))
            if dense:  # every channel holds the tap: plain slices, in channel blocks
                t = tmp[:, :b1 - b0, :b - a, :right - left]
                np.multiply(x[:, b0:b1, src[0], src[1]], vals[b0:b1, None, None], out=t)
                y[:, b0:b1, a:b, left:right] += t
            else:  # the channels that hold it: a gather, and a scatter when not all do
                reads = ins if ins is not None else slice(None) if outs is None else outs
                prod = vals[:, None, None] * x[:, reads, src[0], src[1]]
                y[:, slice(None) if outs is None else outs, a:b, left:right] += prod
    return y


def gemm(x, w, b=None) -> np.ndarray:
    """y = x @ w.T + b; x (N, I), w (O, I)."""
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"gemm: x must be (N, {w.shape[1]}), got {x.shape}")
    y = x @ w.T
    if b is not None:
        y += b
    return y


def gemm_csr_scipy(x, csr, b=None) -> np.ndarray:
    """y = x @ W.T + b with W a scipy csr (O, I)."""
    if x.ndim != 2 or x.shape[1] != csr.shape[1]:
        raise ValueError(f"gemm_csr_scipy: x must be (N, {csr.shape[1]}), got {x.shape}")
    y = np.ascontiguousarray(np.asarray(csr @ x.T).T)  # (N, O)
    if b is not None:
        y += b
    return y


def maxpool2d_nchw(x, k, stride=None, pad=0) -> np.ndarray:
    """Max pooling, PyTorch floor mode; padding counts as -inf."""
    _check_x4(x, "maxpool2d_nchw")
    kh, kw = pair(k, "kernel")
    sh, sw = pair(k if stride is None else stride, "stride")
    ph, pw = pair(pad, "padding")
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"maxpool2d_nchw: input {h}x{w} with padding ({ph}, {pw}) is smaller "
                         f"than the {kh}x{kw} window")
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    # The max of shifted strided views, one ufunc call each: 30x faster than .max() over the
    # small window axes of a 6-d view (NumPy reduces those element by element). A small window
    # takes its KH*KW taps directly; a large one is separable (rows, then columns), so a
    # 1500-wide window costs 3,000 calls, not 2.25 million.
    if kh * kw <= 9:
        def tap(ky, kx):
            return x[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
        y = tap(0, 0).copy()
        for ky in range(kh):
            for kx in range(kw):
                if ky or kx:
                    np.maximum(y, tap(ky, kx), out=y)
        return y
    rows = x[:, :, :, :sw * (ow - 1) + 1:sw].copy()  # (N, C, HP, OW): max along the width
    for kx in range(1, kw):
        np.maximum(rows, x[:, :, :, kx:kx + sw * (ow - 1) + 1:sw], out=rows)
    y = rows[:, :, :sh * (oh - 1) + 1:sh].copy()     # (N, C, OH, OW): then along the height
    for ky in range(1, kh):
        np.maximum(y, rows[:, :, ky:ky + sh * (oh - 1) + 1:sh], out=y)
    return y


def to_scipy_csr(indptr, indices, values, shape) -> sp.csr_matrix:
    """A scipy csr_matrix over the given arrays (O, row_size)."""
    return sp.csr_matrix((np.asarray(values, np.float32), np.asarray(indices),
                          np.asarray(indptr)), shape=tuple(shape))
