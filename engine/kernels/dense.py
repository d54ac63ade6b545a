"""NumPy/SciPy kernels: dense convolution by im2col + BLAS, pooling, GEMM, and the scipy.sparse
path that runs compressed layers when Numba is not available."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view

from engine.kernels.sparse import conv_out_size


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


def im2col(x: np.ndarray, kh: int, kw: int, stride=1, pad=0) -> np.ndarray:
    """(N, C, H, W) -> columns (C*KH*KW, N*OH*OW); row order (c, ky, kx) like a flattened
    (O, C, KH, KW) weight, column order (n, oy, ox). One strided view and one copy."""
    _check_x4(x, "im2col")
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "padding")
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"im2col: input {h}x{w} with padding ({ph}, {pw}) is smaller than "
                         f"the {kh}x{kw} kernel")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))  # (N, C, HP-KH+1, WP-KW+1, KH, KW)
    win = win[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]  # (N, C, OH, OW, KH, KW)
    return win.transpose(1, 4, 5, 0, 2, 3).reshape(c * kh * kw, n * oh * ow)


def _cols_to_nchw(yc: np.ndarray, n: int, oh: int, ow: int) -> np.ndarray:
    """(O, N*OH*OW) -> contiguous (N, O, OH, OW)."""
    return np.ascontiguousarray(yc.reshape(-1, n, oh, ow).transpose(1, 0, 2, 3))


def conv2d_nchw_im2col(x, weight, bias=None, stride=1, pad=0) -> np.ndarray:
    """Dense convolution: weight (O, C, KH, KW) as an (O, C*KH*KW) matrix times im2col columns."""
    _check_x4(x, "conv2d_nchw_im2col")
    o, c, kh, kw = weight.shape
    if x.shape[1] != c:
        raise ValueError(f"conv2d_nchw_im2col: input has {x.shape[1]} channels, weight "
                         f"expects {c}")
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "padding")
    n, _, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    yc = weight.reshape(o, -1) @ im2col(x, kh, kw, (sh, sw), (ph, pw))  # (O, N*OH*OW)
    if bias is not None:
        yc += bias.reshape(o, 1)
    return _cols_to_nchw(yc, n, oh, ow)


def im2col_rows(x: np.ndarray, kh: int, kw: int, stride, pad, rows: np.ndarray) -> np.ndarray:
    """Only the listed rows of im2col(x, ...): (len(rows), N*OH*OW), rows in (c, ky, kx) order
    numbering. A sparse filter bank reads few of the C*KH*KW rows; the others are never built."""
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "padding")
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))
    win = win[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]  # (N, C, OH, OW, KH, KW)
    ci, tap = np.divmod(np.asarray(rows, dtype=np.intp), kh * kw)
    ky, kx = np.divmod(tap, kw)
    return win[:, ci, :, :, ky, kx].reshape(len(rows), n * oh * ow)  # (U, N, OH, OW): one gather


def conv2d_nchw_csr_scipy(x, csr, bias, kh, kw, stride=1, pad=0, used=None) -> np.ndarray:
    """Sparse convolution without Numba: scipy csr (O, C*KH*KW) @ im2col columns. With `used`
    (the sorted weight columns that hold a nonzero) csr is (O, len(used)) and only those rows
    of im2col are built: an empty filter bank costs its bias, not C*KH*KW copies of the input."""
    _check_x4(x, "conv2d_nchw_csr_scipy")
    o, k = csr.shape
    c = x.shape[1]
    if (c * kh * kw if used is None else len(used)) != k or (
            used is not None and len(used) and used[-1] >= c * kh * kw):
        raise ValueError(f"conv2d_nchw_csr_scipy: weight rows hold {k} values, input needs "
                         f"C*KH*KW = {c}*{kh}*{kw} = {c * kh * kw}")
    (sh, sw), (ph, pw) = pair(stride, "stride"), pair(pad, "padding")
    n, _, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d_nchw_csr_scipy: input {h}x{w} with padding ({ph}, {pw}) is "
                         f"smaller than the {kh}x{kw} kernel")
    cols = (im2col(x, kh, kw, (sh, sw), (ph, pw)) if used is None
            else im2col_rows(x, kh, kw, (sh, sw), (ph, pw), used))
    yc = np.asarray(csr @ cols, dtype=np.float32)  # (O, N*OH*OW)
    if bias is not None:
        yc += bias.reshape(o, 1)
    return _cols_to_nchw(yc, n, oh, ow)


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
