"""Sparse kernels that compute on codebook indices: CSR rows are output channels, and the value of
nonzero j in row o is ``table[o, codes[j]]`` (``CodebookTensor.row_table()``). The dense float
weight is never rebuilt.

Each public function checks its inputs, allocates, and calls a private ``@njit`` kernel; the
``*_ref`` function of the same name is the plain NumPy oracle the tests hold it against.
"""

from __future__ import annotations

import numpy as np

from engine.kernels._jit import get_threads, njit, prange

# Below this many multiply-adds a layer runs on one thread: waking the thread pool costs more
# than it saves (tens of microseconds idle, milliseconds when another process holds the cores).
PARALLEL_MIN_MACS = 2_000_000


def _parallel(macs: int) -> bool:
    return int(macs) >= PARALLEL_MIN_MACS and get_threads() > 1

# ---------------------------------------------------------------------------------------------
# checks shared by the wrappers


def _check_x(x, ndim: int, layout: str, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != ndim:
        got = (f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else type(x).__name__)
        raise ValueError(f"{what}: x must be a float32 {layout} array, got {got}")
    return np.ascontiguousarray(x)


def _check_csr(indptr, indices, codes, table, bias, row_size: int | None, what: str,
               scan: bool = True):
    """Canonical dtypes and contiguity for the CSR-codebook arguments; shape errors named.
    scan=False skips the O(nnz) range scans (for callers that checked the tensor once)."""
    table = np.asarray(table)
    if table.ndim != 2 or table.dtype != np.float32:
        raise ValueError(f"{what}: table must be float32 (O, K), got {table.dtype} "
                         f"{table.shape}")
    o = table.shape[0]
    indptr = np.ascontiguousarray(indptr, dtype=np.int64)
    if indptr.shape != (o + 1,):
        raise ValueError(f"{what}: indptr must be (O+1,) = ({o + 1},), got {indptr.shape}")
    nnz = int(indptr[-1])
    indices = np.ascontiguousarray(indices, dtype=np.int32)
    codes = np.ascontiguousarray(codes)
    if codes.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{what}: codes must be uint8 or uint16, got {codes.dtype}")
    if indices.shape != (nnz,) or codes.shape != (nnz,) or indptr[0] != 0:
        raise ValueError(f"{what}: indptr[-1] = {nnz} nonzeros, but indices has "
                         f"{indices.shape} and codes {codes.shape}")
    if scan and nnz and row_size is not None and (indices.min() < 0 or indices.max() >= row_size):
        raise ValueError(f"{what}: column index out of range 0..{row_size - 1}")
    if scan and nnz and int(codes.max()) >= table.shape[1]:
        raise ValueError(f"{what}: code out of range 0..{table.shape[1] - 1}")
    if bias is None:
        bias = np.zeros(o, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if bias.shape != (o,):
        raise ValueError(f"{what}: bias must be ({o},), got {bias.shape}")
    return indptr, indices, codes, np.ascontiguousarray(table), bias


def _row_of_nonzero(indptr: np.ndarray) -> np.ndarray:
    return np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))


# ---------------------------------------------------------------------------------------------
# fully connected: y = x @ W.T + b


def gemm_csr_codebook_ref(x, indptr, indices, codes, table, bias=None) -> np.ndarray:
    """(N, I) -> (N, O), row by row in float64. The oracle."""
    x = np.asarray(x, dtype=np.float64)
    o = table.shape[0]
    vals = np.asarray(table, np.float64)[_row_of_nonzero(indptr), codes.astype(np.intp)]
    y = np.zeros((x.shape[0], o), dtype=np.float64)
    for r in range(o):
        s, e = indptr[r], indptr[r + 1]
        y[:, r] = x[:, indices[s:e]] @ vals[s:e]
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y.astype(np.float32)


@njit
def _gemm_csr_codebook_rows(xt, indptr, indices, codes, table, bias, lo, hi, yt):
    # output channels lo..hi-1; xt (I, N) contiguous so the batch is the inner loop; yt (O, N)
    n_batch = yt.shape[1]
    for o in range(lo, hi):
        start, stop = indptr[o], indptr[o + 1]
        b = bias[o]
        if n_batch == 1:  # batch 1: one register accumulator, a gathered dot product
            acc = b
            for j in range(start, stop):
                acc += table[o, codes[j]] * xt[indices[j], 0]
            yt[o, 0] = acc
        else:
            yrow = yt[o]
            for n in range(n_batch):
                yrow[n] = b
            for j in range(start, stop):
                w = table[o, codes[j]]
                xrow = xt[indices[j]]
                for n in range(n_batch):  # contiguous: vectorised
                    yrow[n] += w * xrow[n]


@njit(parallel=True)
def _gemm_csr_codebook_parallel(xt, indptr, indices, codes, table, bias, yt):
    for o in prange(yt.shape[0]):
        _gemm_csr_codebook_rows(xt, indptr, indices, codes, table, bias, o, o + 1, yt)


def gemm_csr_codebook(x, indptr, indices, codes, table, bias=None, *,
                      check: bool = True) -> np.ndarray:
    """y = x @ W.T + b with W given as CSR rows of codebook indices.

    x (N, I) float32; indptr (O+1,); indices (nnz,) columns in 0..I-1; codes (nnz,) uint8/16;
    table (O, K) float32; bias (O,) float32 or None. Returns (N, O) float32.
    check=False skips the O(nnz) scans of column and code ranges (the op checked them once).
    """
    x = _check_x(x, 2, "(N, I)", "gemm_csr_codebook")
    indptr, indices, codes, table, bias = _check_csr(indptr, indices, codes, table, bias,
                                                     x.shape[1], "gemm_csr_codebook", check)
    xt = np.ascontiguousarray(x.T)  # (I, N)
    yt = np.empty((table.shape[0], x.shape[0]), dtype=np.float32)  # (O, N)
    if _parallel(indptr[-1] * x.shape[0]):
        _gemm_csr_codebook_parallel(xt, indptr, indices, codes, table, bias, yt)
    else:
        _gemm_csr_codebook_rows(xt, indptr, indices, codes, table, bias, 0, yt.shape[0], yt)
    return np.ascontiguousarray(yt.T)


# ---------------------------------------------------------------------------------------------
# direct sparse convolution (Park et al., "Faster CNNs with direct sparse convolutions")


def conv_out_size(size: int, k: int, stride: int, pad: int) -> int:
    """PyTorch's floor rule: (size + 2 pad - k) // stride + 1."""
    return (size + 2 * pad - k) // stride + 1


def conv2d_nchw_csr_codebook_ref(x, indptr, indices, codes, table, bias, kh, kw,
                                 stride_h, stride_w, pad_h, pad_w) -> np.ndarray:
    """(N, C, H, W) -> (N, O, OH, OW): for each nonzero, w * a shifted input plane; float64."""
    n, c, h, w = x.shape
    o = table.shape[0]
    oh, ow = conv_out_size(h, kh, stride_h, pad_h), conv_out_size(w, kw, stride_w, pad_w)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    y = np.zeros((n, o, oh, ow), dtype=np.float64)
    for r in range(o):
        for j in range(indptr[r], indptr[r + 1]):
            ci, rest = divmod(int(indices[j]), kh * kw)
            ky, kx = divmod(rest, kw)
            window = xp[:, ci, ky:ky + stride_h * (oh - 1) + 1:stride_h,
                        kx:kx + stride_w * (ow - 1) + 1:stride_w]  # (N, OH, OW)
            y[:, r] += float(table[r, codes[j]]) * window
    if bias is not None:
        y += np.asarray(bias, np.float64)[:, None, None]
    return y.astype(np.float32)


@njit
def _conv2d_csr_codebook_rows(xp, xoff, indptr, codes, table, bias, sh, sw, wp, lo, hi, y):
    # Output channels lo..hi-1 of y (N, O, OH, OW). Batch-innermost input: xp is the padded
    # input (C, HP, WP, N) flattened; xoff[j] * N is the offset in xp of nonzero j's tap for
    # output pixel (0, 0) (conv2d_tap_offsets: the same for every batch size). One output row
    # of the whole batch, acc (OW*N floats), stays in L1 while every nonzero of the filter
    # adds into it (with stride 1: one contiguous axpy each), then it is written to N planes.
    n, _, oh, ow = y.shape
    run = ow * n
    row_step = sh * wp * n
    acc = np.empty(run, dtype=np.float32)
    for o in range(lo, hi):
        b = bias[o]
        start, stop = indptr[o], indptr[o + 1]
        for oy in range(oh):
            for i in range(run):
                acc[i] = b
            base = oy * row_step
            for j in range(start, stop):
                w = table[o, codes[j]]
                src = base + xoff[j] * n
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
def _conv2d_csr_codebook_parallel(xp, xoff, indptr, codes, table, bias, sh, sw, wp, y):
    for o in prange(y.shape[1]):
        _conv2d_csr_codebook_rows(xp, xoff, indptr, codes, table, bias, sh, sw, wp, o, o + 1, y)


def conv2d_tap_offsets(indices, kh: int, kw: int, hp: int, wp: int) -> np.ndarray:
    """int64 (nnz,): where each nonzero (c, ky, kx) reads a padded (C, HP, WP) input for
    output pixel (0, 0). Depends on the layer and the input size only: compute it once."""
    ci, rest = np.divmod(np.asarray(indices, dtype=np.int64), kh * kw)
    ky, kx = np.divmod(rest, kw)
    return (ci * hp + ky) * wp + kx


def conv2d_nchw_csr_codebook(x, indptr, indices, codes, table, bias, kh, kw,
                             stride_h=1, stride_w=1, pad_h=0, pad_w=0, *,
                             check: bool = True, tap_offsets=None) -> np.ndarray:
    """Direct sparse convolution on codebook indices.

    x (N, C, H, W) float32; row o of the CSR is the flattened (C, KH, KW) filter of output
    channel o; table (O, K) float32; bias (O,) or None. Returns (N, O, OH, OW) float32.
    check=False skips the O(nnz) scans of column and code ranges (the op checked them once);
    tap_offsets is conv2d_tap_offsets(...) for this input size, precomputed by the caller.
    """
    what = "conv2d_nchw_csr_codebook"
    x = _check_x(x, 4, "(N, C, H, W)", what)
    n, c, h, w = x.shape
    kh, kw, sh, sw, ph, pw = (int(v) for v in (kh, kw, stride_h, stride_w, pad_h, pad_w))
    if min(kh, kw, sh, sw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"{what}: kernel and stride must be >= 1 and padding >= 0, got "
                         f"kernel ({kh}, {kw}) stride ({sh}, {sw}) padding ({ph}, {pw})")
    indptr, indices, codes, table, bias = _check_csr(indptr, indices, codes, table, bias,
                                                     c * kh * kw, what, check)
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{w} with padding ({ph}, {pw}) is smaller than "
                         f"the {kh}x{kw} kernel")
    hp, wp = h + 2 * ph, w + 2 * pw
    if n == 1 and not (ph or pw):
        xp = x.reshape(-1)
    else:  # pad and move the batch innermost in one copy: (C, HP, WP, N)
        xp = np.zeros((c, hp, wp, n), dtype=np.float32)
        xp[:, ph:ph + h, pw:pw + w, :] = x.transpose(1, 2, 3, 0)
        xp = xp.reshape(-1)
    xoff = (conv2d_tap_offsets(indices, kh, kw, hp, wp) if tap_offsets is None
            else np.asarray(tap_offsets, dtype=np.int64))
    if xoff.shape != indices.shape:
        raise ValueError(f"{what}: tap_offsets must hold one offset per nonzero")
    o = table.shape[0]
    y = np.empty((n, o, oh, ow), dtype=np.float32)
    args = (xp, xoff, indptr, codes, table, bias, sh, sw, wp)
    if _parallel(indptr[-1] * oh * ow * n):
        _conv2d_csr_codebook_parallel(*args, y)
    else:
        _conv2d_csr_codebook_rows(*args, 0, o, y)
    return y
