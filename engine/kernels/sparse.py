"""Sparse kernels that compute on codebook indices (engine.kernels.csr.CsrCodebook): CSR rows are
output channels; the value of nonzero j in row o is ``book[o * book_step, codes[j]]``, and a
scaled tensor multiplies each output of row o by ``scale[o]`` once, after the sum (in NumPy:
a branch for it inside the Numba kernels made LLVM stop vectorising them, 4x slower). The
dense float weight is never rebuilt, and neither is an (O, K) table from a shared codebook.

Each public function checks its inputs in O(1) on every call (shapes, widths, dtypes: the
O(nnz) range scans were done once, when the CsrCodebook was made), allocates, and calls a
private ``@njit`` kernel; the ``*_ref`` function of the same name is the plain NumPy oracle
the tests hold it against. The oracles take the stored arrays, not a CsrCodebook, and compute
each value as ``scale[o] * codebook[o or 0][code]`` themselves.
"""

from __future__ import annotations

import numpy as np

from engine.kernels._jit import get_threads, njit, prange
from engine.kernels.csr import CsrCodebook

# Below this many multiply-adds a layer runs on one thread: waking the thread pool costs more
# than it saves (tens of microseconds idle, milliseconds when another process holds the cores).
PARALLEL_MIN_MACS = 2_000_000


def _parallel(macs: int) -> bool:
    return int(macs) >= PARALLEL_MIN_MACS and get_threads() > 1

# ---------------------------------------------------------------------------------------------
# O(1) checks shared by the wrappers (every call)


def _check_x(x, ndim: int, layout: str, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != ndim:
        got = (f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else type(x).__name__)
        raise ValueError(f"{what}: x must be a float32 {layout} array, got {got}")
    return np.ascontiguousarray(x)


def _check_weight(w, bias, what: str) -> np.ndarray:
    """A CsrCodebook (whose arrays agree: checked when it was made); returns the bias as
    float32 (O,)."""
    if not isinstance(w, CsrCodebook):
        raise ValueError(f"{what}: weight must be a CsrCodebook, got {type(w).__name__}")
    o = w.rows
    if bias is None:
        return np.zeros(o, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if bias.shape != (o,):
        raise ValueError(f"{what}: bias must be ({o},), got {bias.shape}")
    return bias


def _values_ref(indptr, codes, codebook, scale) -> np.ndarray:
    """float64 value of each nonzero, scale[o] * codebook[o or 0][code], written out plainly."""
    book = np.asarray(codebook, np.float64)
    out = np.empty(len(codes), dtype=np.float64)
    for r in range(len(indptr) - 1):
        for j in range(int(indptr[r]), int(indptr[r + 1])):
            row = book[r] if book.ndim == 2 else book
            out[j] = row[int(codes[j])] * (1.0 if scale is None else float(scale[r]))
    return out


# ---------------------------------------------------------------------------------------------
# fully connected: y = x @ W.T + b


def gemm_csr_codebook_ref(x, indptr, cols, codes, codebook, scale=None, bias=None) -> np.ndarray:
    """(N, I) -> (N, O), row by row in float64. The oracle."""
    x = np.asarray(x, dtype=np.float64)
    o = len(indptr) - 1
    vals = _values_ref(indptr, codes, codebook, scale)
    y = np.zeros((x.shape[0], o), dtype=np.float64)
    for r in range(o):
        s, e = indptr[r], indptr[r + 1]
        y[:, r] = x[:, np.asarray(cols[s:e], dtype=np.intp)] @ vals[s:e]
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y.astype(np.float32)


@njit
def _gemm_csr_codebook_rows(xt, indptr, cols, codes, book, book_step, bias, lo, hi, yt):
    # output channels lo..hi-1; xt (I, N) contiguous so the batch is the inner loop; yt (O, N)
    n_batch = yt.shape[1]
    for o in range(lo, hi):
        start, stop = indptr[o], indptr[o + 1]
        brow = o * book_step
        b = bias[o]
        if n_batch == 1:  # batch 1: one register accumulator, a gathered dot product
            acc = b
            for j in range(start, stop):
                acc += book[brow, codes[j]] * xt[cols[j], 0]
            yt[o, 0] = acc
        else:
            yrow = yt[o]
            for n in range(n_batch):
                yrow[n] = b
            for j in range(start, stop):
                w = book[brow, codes[j]]
                xrow = xt[cols[j]]
                for n in range(n_batch):  # contiguous: vectorised
                    yrow[n] += w * xrow[n]


@njit(parallel=True)
def _gemm_csr_codebook_parallel(xt, indptr, cols, codes, book, book_step, bias, yt):
    for o in prange(yt.shape[0]):
        _gemm_csr_codebook_rows(xt, indptr, cols, codes, book, book_step, bias, o, o + 1, yt)


def gemm_csr_codebook(x, w: CsrCodebook, bias=None) -> np.ndarray:
    """y = x @ W.T + b with W a CsrCodebook of shape (O, I); x (N, I) float32; bias (O,) or
    None. Returns (N, O) float32."""
    what = "gemm_csr_codebook"
    x = _check_x(x, 2, "(N, I)", what)
    bias = _check_weight(w, bias, what)
    if x.shape[1] != w.row_size:
        raise ValueError(f"{what}: x must be (N, {w.row_size}), got {x.shape}")
    xt = np.ascontiguousarray(x.T)  # (I, N)
    yt = np.empty((w.rows, x.shape[0]), dtype=np.float32)  # (O, N)
    scaled = w.scale.shape[0] > 0
    args = (xt, w.indptr, w.cols, w.codes, w.book, w.book_step,
            np.zeros_like(bias) if scaled else bias)
    if _parallel(w.nnz * x.shape[0]):
        _gemm_csr_codebook_parallel(*args, yt)
    else:
        _gemm_csr_codebook_rows(*args, 0, w.rows, yt)
    if scaled:  # each output once: y = scale[o] * (sum of codebook values x inputs) + b
        yt *= w.scale[:, None]
        yt += bias[:, None]
    return np.ascontiguousarray(yt.T)


# ---------------------------------------------------------------------------------------------
# direct sparse convolution (Park et al., "Faster CNNs with direct sparse convolutions")


def conv_out_size(size: int, k: int, stride: int, pad: int) -> int:
    """PyTorch's floor rule: (size + 2 pad - k) // stride + 1."""
    return (size + 2 * pad - k) // stride + 1


def conv2d_nchw_csr_codebook_ref(x, indptr, cols, codes, codebook, scale, bias, kh, kw,
                                 stride_h, stride_w, pad_h, pad_w) -> np.ndarray:
    """(N, C, H, W) -> (N, O, OH, OW): for each nonzero, w * a shifted input plane; float64."""
    n, c, h, w = x.shape
    o = len(indptr) - 1
    oh, ow = conv_out_size(h, kh, stride_h, pad_h), conv_out_size(w, kw, stride_w, pad_w)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    vals = _values_ref(indptr, codes, codebook, scale)
    y = np.zeros((n, o, oh, ow), dtype=np.float64)
    for r in range(o):
        for j in range(indptr[r], indptr[r + 1]):
            ci, rest = divmod(int(cols[j]), kh * kw)
            ky, kx = divmod(rest, kw)
            window = xp[:, ci, ky:ky + stride_h * (oh - 1) + 1:stride_h,
                        kx:kx + stride_w * (ow - 1) + 1:stride_w]  # (N, OH, OW)
            y[:, r] += vals[j] * window
    if bias is not None:
        y += np.asarray(bias, np.float64)[:, None, None]
    return y.astype(np.float32)


@njit
def _conv2d_csr_codebook_rows(xp, hp, wp, kh, kw, sh, sw, indptr, cols, codes, book,
                              book_step, bias, lo, hi, y):
    # Output channels lo..hi-1 of y (N, O, OH, OW). Batch-innermost input: xp is the padded
    # input (C, HP, WP, N) flattened. Per channel, off[j] is where nonzero j (c, ky, kx) reads
    # xp for output pixel (0, 0): computed here from the stored column, once per channel and
    # call, so no per-nonzero offset table stays resident. One output row of the whole batch,
    # acc (OW*N floats), stays in L1 while every nonzero of the filter adds into it (with
    # stride 1: one contiguous axpy each), then it is written to N planes.
    n, _, oh, ow = y.shape
    run = ow * n
    row_step = sh * wp * n
    khkw = kh * kw
    # col // khkw without an integer division (tens of cycles each, per nonzero and call):
    # (col + 0.5) / d is at least 0.5 / d >= 2**-25 away from an integer for col < 2**31 and
    # d <= 2**24, far more than float64's rounding error, so truncation gives the exact quotient.
    inv_khkw, inv_kw = 1.0 / khkw, 1.0 / kw
    acc = np.empty(run, dtype=np.float32)
    most = 0
    for o in range(lo, hi):
        most = max(most, indptr[o + 1] - indptr[o])
    off = np.empty(most, dtype=np.int64)
    for o in range(lo, hi):
        start, stop = indptr[o], indptr[o + 1]
        for j in range(start, stop):
            col = np.int64(cols[j])
            ci = np.int64((col + 0.5) * inv_khkw)
            tap = col - ci * khkw
            ky = np.int64((tap + 0.5) * inv_kw)
            off[j - start] = ((ci * hp + ky) * wp + tap - ky * kw) * n
        brow = o * book_step
        b = bias[o]
        for oy in range(oh):
            for i in range(run):
                acc[i] = b
            base = oy * row_step
            for j in range(start, stop):
                w = book[brow, codes[j]]
                src = base + off[j - start]
                if sw == 1:
                    # a slice indexed from 0: no negative-index wraparound, so LLVM vectorises
                    xrow = xp[src:src + run]
                    for i in range(run):
                        acc[i] += w * xrow[i]
                elif n == 1:
                    xrow = xp[src:src + (ow - 1) * sw + 1]
                    for ox in range(ow):
                        acc[ox] += w * xrow[ox * sw]
                else:
                    for ox in range(ow):
                        at = src + ox * sw * n
                        xv = xp[at:at + n]
                        av = acc[ox * n:(ox + 1) * n]
                        for i in range(n):
                            av[i] += w * xv[i]
            for i in range(n):
                yrow = y[i, o, oy]
                for ox in range(ow):
                    yrow[ox] = acc[ox * n + i]


@njit(parallel=True)
def _conv2d_csr_codebook_parallel(xp, hp, wp, kh, kw, sh, sw, indptr, cols, codes, book,
                                  book_step, bias, y):
    for o in prange(y.shape[1]):
        _conv2d_csr_codebook_rows(xp, hp, wp, kh, kw, sh, sw, indptr, cols, codes, book,
                                  book_step, bias, o, o + 1, y)


def conv2d_nchw_csr_codebook(x, w: CsrCodebook, bias, kh: int, kw: int, stride=(1, 1),
                             pad=(0, 0)) -> np.ndarray:
    """Direct sparse convolution on codebook indices.

    x (N, C, H, W) float32; w a CsrCodebook whose row o is the flattened (C, KH, KW) filter of
    output channel o; bias (O,) or None. Returns (N, O, OH, OW) float32.
    """
    what = "conv2d_nchw_csr_codebook"
    x = _check_x(x, 4, "(N, C, H, W)", what)
    bias = _check_weight(w, bias, what)
    n, c, h, wd = x.shape
    (sh, sw), (ph, pw) = stride, pad
    kh, kw, sh, sw, ph, pw = (int(v) for v in (kh, kw, sh, sw, ph, pw))
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{what}: kernel and stride must be >= 1 and padding >= 0, got "
                         f"kernel ({kh}, {kw}) stride ({sh}, {sw}) padding ({ph}, {pw})")
    if c * kh * kw != w.row_size:  # what keeps every tap offset inside the input
        raise ValueError(f"{what}: input has {c} channels; the weight's rows hold "
                         f"{w.row_size} values, not C*KH*KW = {c}*{kh}*{kw}")
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(wd, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{wd} with padding ({ph}, {pw}) is smaller than "
                         f"the {kh}x{kw} kernel")
    hp, wp = h + 2 * ph, wd + 2 * pw
    if n == 1 and not (ph or pw):
        xp = x.reshape(-1)
    else:  # pad and move the batch innermost in one copy: (C, HP, WP, N)
        xp = np.zeros((c, hp, wp, n), dtype=np.float32)
        xp[:, ph:ph + h, pw:pw + wd, :] = x.transpose(1, 2, 3, 0)
        xp = xp.reshape(-1)
    y = np.empty((n, w.rows, oh, ow), dtype=np.float32)
    scaled = w.scale.shape[0] > 0
    args = (xp, hp, wp, kh, kw, sh, sw, w.indptr, w.cols, w.codes, w.book, w.book_step,
            np.zeros_like(bias) if scaled else bias)
    if _parallel(w.nnz * oh * ow * n):
        _conv2d_csr_codebook_parallel(*args, y)
    else:
        _conv2d_csr_codebook_rows(*args, 0, w.rows, y)
    if scaled:  # each output once: y = scale[o] * (sum of codebook values x inputs) + b
        y *= w.scale[:, None, None]
        y += bias[:, None, None]
    return y
