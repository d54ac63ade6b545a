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
# convolution geometry, checked in O(1) on every call


def conv_out_size(size: int, k: int, stride: int, pad: int, pad_end: int | None = None,
                  dilation: int = 1) -> int:
    """PyTorch's and ONNX's floor rule:
    (size + pad + pad_end - dilation * (k - 1) - 1) // stride + 1 (pad_end defaults to pad)."""
    pad_end = pad if pad_end is None else pad_end
    return (size + pad + pad_end - dilation * (k - 1) - 1) // stride + 1


def pads4(pad) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from an int, (ph, pw) (both sides) or (top, left, bottom,
    right)."""
    if isinstance(pad, (int, np.integer)):
        return (int(pad),) * 4
    p = tuple(int(v) for v in pad)
    if len(p) == 2:
        return p[0], p[1], p[0], p[1]
    if len(p) == 4:
        return p  # type: ignore[return-value]
    raise ValueError(f"padding must be (ph, pw) or (top, left, bottom, right), got {pad!r}")


def _conv_geometry(what: str, x_shape: tuple, w: CsrCodebook, kh, kw, stride, pad, dilation,
                   groups) -> tuple:
    """The call's geometry as ints, every one checked against the input and the weight (what
    keeps every tap offset of every kernel below inside its input): (kh, kw, sh, sw, pt, pl,
    pb, pr, dh, dw, groups, oh, ow)."""
    n, c, h, wd = x_shape
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pads4(pad)
    kh, kw, sh, sw, dh, dw, groups = (int(v) for v in (kh, kw, sh, sw, dh, dw, groups))
    if min(kh, kw, sh, sw, dh, dw, groups) < 1 or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"{what}: kernel, stride, dilation and groups must be >= 1 and padding "
                         f">= 0, got kernel ({kh}, {kw}) stride ({sh}, {sw}) dilation ({dh}, "
                         f"{dw}) groups {groups} padding ({pt}, {pl}, {pb}, {pr})")
    if c % groups or w.rows % groups:
        raise ValueError(f"{what}: groups={groups} must divide the input's {c} channels and the "
                         f"weight's {w.rows} rows")
    cg = c // groups
    if cg * kh * kw != w.row_size:  # what keeps every tap offset inside the input
        raise ValueError(f"{what}: input has {c} channels; the weight's rows hold "
                         f"{w.row_size} values, not C/groups*KH*KW = {cg}*{kh}*{kw}")
    oh, ow = conv_out_size(h, kh, sh, pt, pb, dh), conv_out_size(wd, kw, sw, pl, pr, dw)
    if oh < 1 or ow < 1:
        raise ValueError(f"{what}: input {h}x{wd} with padding ({pt}, {pl}, {pb}, {pr}) is "
                         f"smaller than the {kh}x{kw} kernel dilated by ({dh}, {dw})")
    return kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups, oh, ow


def _finish_scaled(y: np.ndarray, w: CsrCodebook, bias: np.ndarray) -> np.ndarray:
    """y (N, O, ...) = scale[o] * (sum of codebook values x inputs) + b, each output once."""
    extra = (None,) * (y.ndim - 2)
    y *= w.scale[(slice(None), *extra)]
    y += bias[(slice(None), *extra)]
    return y


def conv2d_nchw_csr_codebook_ref(x, indptr, cols, codes, codebook, scale, bias, kh, kw,
                                 stride=(1, 1), pad=(0, 0), dilation=(1, 1),
                                 groups=1) -> np.ndarray:
    """(N, C, H, W) -> (N, O, OH, OW): for each nonzero, w * a shifted (dilated, strided) plane
    of its group's input channel; float64. The oracle of every conv kernel on codes."""
    n, c, h, w = x.shape
    o = len(indptr) - 1
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pads4(pad)
    oh, ow = conv_out_size(h, kh, sh, pt, pb, dh), conv_out_size(w, kw, sw, pl, pr, dw)
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    vals = _values_ref(indptr, codes, codebook, scale)
    cg, og = c // groups, o // groups
    y = np.zeros((n, o, oh, ow), dtype=np.float64)
    for r in range(o):
        for j in range(indptr[r], indptr[r + 1]):
            ci, rest = divmod(int(cols[j]), kh * kw)
            ky, kx = divmod(rest, kw)
            window = xp[:, (r // og) * cg + ci, ky * dh:ky * dh + sh * (oh - 1) + 1:sh,
                        kx * dw:kx * dw + sw * (ow - 1) + 1:sw]  # (N, OH, OW)
            y[:, r] += vals[j] * window
    if bias is not None:
        y += np.asarray(bias, np.float64)[:, None, None]
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# direct sparse convolution (Park et al., "Faster CNNs with direct sparse convolutions"): any
# kernel size, stride, dilation, padding and groups. The input is copied once into phase planes
# (space-to-depth by the stride): padded pixel (iy, ix) goes to phase (iy % sh, ix % sw) at
# (iy // sh, ix // sw). Every tap of a strided conv then reads one phase plane at unit stride,
# so each nonzero of every conv adds one contiguous run per output row (reading with a run-time
# stride, which LLVM does not vectorise, made MobileNet's first conv, 3x3 s2 on 224x224, 6x
# slower and ResNet's 7x7 s2 10x, at batch 1).


# An output row shorter than CONV_RUN_MIN floats (OW*N) is summed with the next ones as one
# run over whole phase-plane rows, up to CONV_ACC_FLOATS floats (8 KB of L1), the WQ-OW columns
# between them computed and dropped: a nonzero then costs one long axpy, not one per short
# row. Batch 1, one thread: LeNet-5 conv1 29 -> 17 us, conv2 39 -> 21 us, a 3x3 256-channel
# conv on 14x14 10.4 -> 3.8 ms, 512 on 7x7 20 -> 8 ms (35% dense). 128..256 and 1-4K floats
# within 5% of each other on these and at batch 32 (where rows are long: one at a time).
CONV_RUN_MIN = 256
CONV_ACC_FLOATS = 2048


@njit
def _acc_nonzeros(acc, run, b, xq, base, off, start, stop, book, brow, codes):
    # acc[:run] = b + the sum over nonzeros j of w_j * xq[base + off[j - start]:][:run]. Slices
    # indexed from 0: no negative-index wraparound, so LLVM vectorises; four nonzeros a pass
    # load and store acc a quarter as often (1.2-1.4x).
    for i in range(run):
        acc[i] = b
    j = start
    while j + 4 <= stop:
        w0 = book[brow, codes[j]]
        w1 = book[brow, codes[j + 1]]
        w2 = book[brow, codes[j + 2]]
        w3 = book[brow, codes[j + 3]]
        s0 = base + off[j - start]
        s1 = base + off[j + 1 - start]
        s2 = base + off[j + 2 - start]
        s3 = base + off[j + 3 - start]
        x0 = xq[s0:s0 + run]
        x1 = xq[s1:s1 + run]
        x2 = xq[s2:s2 + run]
        x3 = xq[s3:s3 + run]
        for i in range(run):
            acc[i] += (w0 * x0[i] + w1 * x1[i]) + (w2 * x2[i] + w3 * x3[i])
        j += 4
    while j < stop:
        w = book[brow, codes[j]]
        s0 = base + off[j - start]
        x0 = xq[s0:s0 + run]
        for i in range(run):
            acc[i] += w * x0[i]
        j += 1


@njit
def _conv2d_csr_codebook_rows(xq, sh, sw, hq, wq, kh, kw, dh, dw, og, cg, rows, indptr, cols,
                              codes, book, book_step, bias, lo, hi, y):
    # Output channels lo..hi-1 of y (N, O, OH, OW). xq: the phase planes (C, SH, SW, HQ, WQ, N)
    # flattened, batch innermost; tap (ky, kx) of input channel c starts at (c*plane +
    # ytab[ky] + xtab[kx]) * N for output pixel (0, 0), and output row oy adds oy*WQ*N.
    # Per channel, off[j] is that start for nonzero j (channel g*cg + ci of its group
    # g = o // og): computed here from the stored column, once per channel and call, so no
    # per-nonzero offset table stays resident. A block of `rows` output rows of the whole batch,
    # acc ((rows-1)*WQ*N + OW*N floats), stays in L1 while every nonzero of the filter adds into
    # it (one contiguous axpy each, four nonzeros a pass), then its OW columns of each row are
    # written to N planes.
    n, _, oh, ow = y.shape
    row_step = wq * n
    plane = sh * sw * hq * wq
    ytab = np.empty(kh, dtype=np.int64)  # where tap row ky, column kx start in the planes
    for ky in range(kh):
        ytab[ky] = ((ky * dh) % sh * sw * hq + (ky * dh) // sh) * wq
    xtab = np.empty(kw, dtype=np.int64)
    for kx in range(kw):
        xtab[kx] = (kx * dw) % sw * hq * wq + (kx * dw) // sw
    khkw = kh * kw
    # col // khkw without an integer division (tens of cycles each, per nonzero and call):
    # (col + 0.5) / d is at least 0.5 / d away from an integer, and float64 computes it to
    # within (col + 0.5) / d * 2**-51, less than that for any col < 2**50, so truncation gives
    # the exact quotient.
    inv_khkw, inv_kw = 1.0 / khkw, 1.0 / kw
    acc = np.empty(((rows - 1) * wq + ow) * n, dtype=np.float32)
    most = 0
    for o in range(lo, hi):
        most = max(most, indptr[o + 1] - indptr[o])
    off = np.empty(most, dtype=np.int64)
    for o in range(lo, hi):
        start, stop = indptr[o], indptr[o + 1]
        cbase = (o // og) * cg
        for j in range(start, stop):
            col = np.int64(cols[j])
            ci = np.int64((col + 0.5) * inv_khkw)
            tap = col - ci * khkw
            ky = np.int64((tap + 0.5) * inv_kw)
            off[j - start] = ((cbase + ci) * plane + ytab[ky] + xtab[tap - ky * kw]) * n
        brow = o * book_step
        b = bias[o]
        for oy in range(0, oh, rows):
            r = min(rows, oh - oy)
            _acc_nonzeros(acc, ((r - 1) * wq + ow) * n, b, xq, oy * row_step, off, start, stop,
                          book, brow, codes)
            for q in range(r):
                if n == 1:
                    yrow = y[0, o, oy + q]
                    src = acc[q * row_step:]
                    for ox in range(ow):
                        yrow[ox] = src[ox]
                else:
                    src = acc[q * row_step:]
                    for i in range(n):
                        yrow = y[i, o, oy + q]
                        for ox in range(ow):
                            yrow[ox] = src[ox * n + i]


@njit(parallel=True)
def _conv2d_csr_codebook_parallel(xq, sh, sw, hq, wq, kh, kw, dh, dw, og, cg, rows, indptr,
                                  cols, codes, book, book_step, bias, y):
    for o in prange(y.shape[1]):
        _conv2d_csr_codebook_rows(xq, sh, sw, hq, wq, kh, kw, dh, dw, og, cg, rows, indptr, cols,
                                  codes, book, book_step, bias, o, o + 1, y)


def phase_shape(hp: int, wp: int, sh: int, sw: int, oh: int, ow: int) -> tuple:
    """(SH, SW, HQ, WQ) of the phase planes of a padded HP x WP input: one output row (column)
    reads at one offset whatever the stride, so its stride counts as 1 (a stride of 2**24 on a
    5-pixel image must not ask for 2**24 phases). Then SH*HQ < HP + SH <= 2*HP."""
    sh, sw = (1 if oh == 1 else sh), (1 if ow == 1 else sw)
    return sh, sw, -(-hp // sh), -(-wp // sw)


def _phase_split(x: np.ndarray, pads, phases, ry_used, rx_used) -> np.ndarray:
    """(C, SH, SW, HQ, WQ, N) zeros holding the padded input (N, C, H, W) by phase: padded
    pixel (iy, ix) at [c, iy % sh, ix % sw, iy // sh, ix // sw, n]; only the phases some tap
    reads (rows ry_used x columns rx_used) are filled."""
    n, c, h, w = x.shape
    (pt, pl, _, _), (sh, sw, hq, wq) = pads, phases
    xq = np.zeros((c, sh, sw, hq, wq, n), dtype=np.float32)
    xt = x.transpose(1, 2, 3, 0)  # (C, H, W, N)
    for ry in ry_used:
        # padded row q*sh + ry is input row q*sh + ry - pt: rows q in [q0, q1) are inside
        qy0, qy1 = -(-max(0, pt - ry) // sh), min(hq, -(-(h + pt - ry) // sh))
        for rx in rx_used:
            qx0, qx1 = -(-max(0, pl - rx) // sw), min(wq, -(-(w + pl - rx) // sw))
            if qy1 > qy0 and qx1 > qx0:
                iy0, ix0 = qy0 * sh + ry - pt, qx0 * sw + rx - pl
                xq[:, ry, rx, qy0:qy1, qx0:qx1] = xt[:, iy0:iy0 + (qy1 - qy0 - 1) * sh + 1:sh,
                                                     ix0:ix0 + (qx1 - qx0 - 1) * sw + 1:sw]
    return xq


def conv2d_nchw_csr_codebook(x, w: CsrCodebook, bias, kh: int, kw: int, stride=(1, 1),
                             pad=(0, 0), dilation=(1, 1), groups: int = 1) -> np.ndarray:
    """Direct sparse convolution on codebook indices.

    x (N, C, H, W) float32; w a CsrCodebook whose row o is the flattened (C/groups, KH, KW)
    filter of output channel o (reading input channels g*C/groups.. of its group g = o //
    (O/groups)); bias (O,) or None; pad (ph, pw) or (top, left, bottom, right). Returns
    (N, O, OH, OW) float32. Workspace: the input's phase planes, padded, batch innermost
    (C*HP*WP*N floats; none for one unpadded image at stride 1).
    """
    what = "conv2d_nchw_csr_codebook"
    x = _check_x(x, 4, "(N, C, H, W)", what)
    bias = _check_weight(w, bias, what)
    n, c, h, wd = x.shape
    kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, groups, oh, ow = _conv_geometry(
        what, x.shape, w, kh, kw, stride, pad, dilation, groups)
    sh, sw, hq, wq = phase_shape(h + pt + pb, wd + pl + pr, sh, sw, oh, ow)
    if n == 1 and sh == sw == 1 and not (pt or pl or pb or pr):
        xq = x.reshape(-1)
    else:
        ry = np.unique(np.arange(kh) * dh % sh).tolist()  # the phases some tap reads
        rx = np.unique(np.arange(kw) * dw % sw).tolist()
        xq = _phase_split(x, (pt, pl, pb, pr), (sh, sw, hq, wq), ry, rx).reshape(-1)
    y = np.empty((n, w.rows, oh, ow), dtype=np.float32)
    scaled = w.scale.shape[0] > 0
    rows = 1 if ow * n >= CONV_RUN_MIN else max(1, min(oh, CONV_ACC_FLOATS // (wq * n)))
    args = (xq, sh, sw, hq, wq, kh, kw, dh, dw, w.rows // groups, c // groups, rows, w.indptr,
            w.cols, w.codes, w.book, w.book_step, np.zeros_like(bias) if scaled else bias)
    if _parallel(w.nnz * oh * ow * n):
        _conv2d_csr_codebook_parallel(*args, y)
    else:
        _conv2d_csr_codebook_rows(*args, 0, w.rows, y)
    return _finish_scaled(y, w, bias) if scaled else y


# ---------------------------------------------------------------------------------------------
# pointwise (1x1) convolution: a sparse (O x C/groups per group) times dense (C x pixels)
# product, blocked like XNNPACK's f32-spmm: a block of SPMM_BLOCK pixels of every input channel
# stays in cache while every output channel of that block is summed.

SPMM_BLOCK = 256  # pixels a block: 128..512 within 5% on MobileNetV2's 1x1 layers, 256 best


@njit
def _spmm_codebook_blocks(x, c, p, og, cg, indptr, cols, codes, book, book_step, bias, mr,
                          t_lo, t_hi, o_lo, o_hi, y):
    # x (N*C*P,) and y (N*O*P,) flattened NCHW; blocks t_lo..t_hi-1 numbered (n, pixel block),
    # output channels o_lo..o_hi-1. Per block, acc (mr floats) sums one output channel's
    # nonzeros, four per pass (acc is loaded and stored a quarter as often: 1.3x), then is
    # stored once. Row r of the product reads input channel g*cg + col, g = o // og.
    o_n = indptr.shape[0] - 1
    blocks = (p + mr - 1) // mr
    acc = np.empty(mr, dtype=np.float32)
    for t in range(t_lo, t_hi):
        n = t // blocks
        p0 = (t - n * blocks) * mr
        m = min(mr, p - p0)
        xb = n * c * p + p0
        for o in range(o_lo, o_hi):
            cb = xb + (o // og) * cg * p
            b = bias[o]
            for i in range(m):
                acc[i] = b
            brow = o * book_step
            j, stop = indptr[o], indptr[o + 1]
            while j + 4 <= stop:
                w0 = book[brow, codes[j]]
                w1 = book[brow, codes[j + 1]]
                w2 = book[brow, codes[j + 2]]
                w3 = book[brow, codes[j + 3]]
                s0 = cb + np.int64(cols[j]) * p
                s1 = cb + np.int64(cols[j + 1]) * p
                s2 = cb + np.int64(cols[j + 2]) * p
                s3 = cb + np.int64(cols[j + 3]) * p
                x0 = x[s0:s0 + m]
                x1 = x[s1:s1 + m]
                x2 = x[s2:s2 + m]
                x3 = x[s3:s3 + m]
                for i in range(m):
                    acc[i] += (w0 * x0[i] + w1 * x1[i]) + (w2 * x2[i] + w3 * x3[i])
                j += 4
            while j < stop:
                w = book[brow, codes[j]]
                s0 = cb + np.int64(cols[j]) * p
                x0 = x[s0:s0 + m]
                for i in range(m):
                    acc[i] += w * x0[i]
                j += 1
            at = (n * o_n + o) * p + p0
            yr = y[at:at + m]
            for i in range(m):
                yr[i] = acc[i]


@njit(parallel=True)
def _spmm_codebook_parallel(x, c, p, og, cg, indptr, cols, codes, book, book_step, bias, mr,
                            blocks, splits, y):
    # blocks x splits work items: pixel blocks first; the output channels are split too when
    # there are fewer blocks than threads (a 7x7 layer of one image is one block)
    o_n = indptr.shape[0] - 1
    for item in prange(blocks * splits):
        t = item // splits
        s = item - t * splits
        _spmm_codebook_blocks(x, c, p, og, cg, indptr, cols, codes, book, book_step, bias, mr,
                              t, t + 1, s * o_n // splits, (s + 1) * o_n // splits, y)


def conv2d_1x1_nchw_spmm_codebook(x, w: CsrCodebook, bias, stride=(1, 1),
                                  groups: int = 1) -> np.ndarray:
    """Pointwise convolution on codebook indices, no padding: per image, the sparse (O, C/groups)
    weight (block diagonal over groups) times the (C, OH*OW) pixels, read in place (a stride
    above 1 first takes every stride-th pixel: a copy of C*OH*OW floats).

    x (N, C, H, W) float32; w a CsrCodebook of O rows of C/groups; bias (O,) or None. Returns
    (N, O, OH, OW) float32.
    """
    what = "conv2d_1x1_nchw_spmm_codebook"
    x = _check_x(x, 4, "(N, C, H, W)", what)
    bias = _check_weight(w, bias, what)
    n, c = x.shape[:2]
    _, _, sh, sw, _, _, _, _, _, _, groups, oh, ow = _conv_geometry(
        what, x.shape, w, 1, 1, stride, (0, 0), (1, 1), groups)
    if sh > 1 or sw > 1:
        x = np.ascontiguousarray(x[:, :, ::sh, ::sw])  # (N, C, OH, OW)
    p = oh * ow
    y = np.empty((n, w.rows, oh, ow), dtype=np.float32)
    scaled = w.scale.shape[0] > 0
    args = (x.reshape(-1), c, p, w.rows // groups, c // groups, w.indptr, w.cols, w.codes,
            w.book, w.book_step, np.zeros_like(bias) if scaled else bias, SPMM_BLOCK)
    blocks = n * ((p + SPMM_BLOCK - 1) // SPMM_BLOCK)
    threads = get_threads()
    if _parallel(w.nnz * p * n):
        splits = 1 if blocks >= 4 * threads else min(w.rows, -(-4 * threads // blocks))
        _spmm_codebook_parallel(*args, blocks, splits, y.reshape(-1))
    else:
        _spmm_codebook_blocks(*args, 0, blocks, 0, w.rows, y.reshape(-1))
    return _finish_scaled(y, w, bias) if scaled else y


# ---------------------------------------------------------------------------------------------
# depthwise convolution (groups = C, one (KH, KW) filter per output channel, O = m*C reading
# input channel o // m): on the NCHW input in place, no padded copy. Each plane's taps (at most
# KH*KW nonzeros) are decoded once; each output row (OW floats, in L1) then takes one axpy per
# tap along the row, clipped to the columns whose input is inside the image (the padding is
# never materialised), and rows whose input row is outside are skipped.


@njit
def _dw_row_s1(xc, yr, iy0, h, tw, tdy, tdx, tlo, thi, k):
    for j in range(k):
        iy = iy0 + tdy[j]
        if iy < 0 or iy >= h:
            continue
        a = tlo[j]
        e = thi[j]
        wv = tw[j]
        xs = xc[iy][a + tdx[j]:]  # slices from 0: vectorised
        ys = yr[a:e]
        for i in range(e - a):
            ys[i] += wv * xs[i]


@njit
def _dw_row_s2(xc, yr, iy0, h, tw, tdy, tdx, tlo, thi, k):
    # the stride a constant: LLVM vectorises the stride-2 reads (3x the run-time stride loop)
    for j in range(k):
        iy = iy0 + tdy[j]
        if iy < 0 or iy >= h:
            continue
        a = tlo[j]
        e = thi[j]
        wv = tw[j]
        xs = xc[iy][2 * a + tdx[j]:]
        ys = yr[a:e]
        for i in range(e - a):
            ys[i] += wv * xs[2 * i]


@njit
def _dw_row_any(xc, yr, iy0, h, sw, tw, tdy, tdx, tlo, thi, k):
    for j in range(k):
        iy = iy0 + tdy[j]
        if iy < 0 or iy >= h:
            continue
        a = tlo[j]
        e = thi[j]
        wv = tw[j]
        xs = xc[iy][sw * a + tdx[j]:]
        ys = yr[a:e]
        for i in range(e - a):
            ys[i] += wv * xs[sw * i]


@njit
def _dwconv2d_csr_codebook_planes(x, kw, sh, sw, dh, dw, pt, pl, og, indptr, cols, codes,
                                  book, book_step, bias, lo, hi, y):
    # planes lo..hi-1 of y (N, O, OH, OW), numbered n * O + o; x (N, C, H, W)
    _, _, h, wd = x.shape
    _, o_n, oh, ow = y.shape
    most = 0
    for t in range(lo, min(hi, lo + o_n)):  # the planes' rows (each row once)
        o = t % o_n
        most = max(most, indptr[o + 1] - indptr[o])
    tw = np.empty(most, dtype=np.float32)  # per tap: value, row and column offsets, and
    tdy = np.empty(most, dtype=np.int64)   # the output columns [tlo, thi) it reaches
    tdx = np.empty(most, dtype=np.int64)
    tlo = np.empty(most, dtype=np.int64)
    thi = np.empty(most, dtype=np.int64)
    for t in range(lo, hi):
        n = t // o_n
        o = t - n * o_n
        xc, yc = x[n, o // og], y[n, o]
        start = indptr[o]
        k = indptr[o + 1] - start
        brow = o * book_step
        for j in range(k):
            col = np.int64(cols[start + j])  # ky * KW + kx, below KH*KW
            ky = col // kw
            dx = (col - ky * kw) * dw - pl
            tw[j] = book[brow, codes[start + j]]
            tdy[j] = ky * dh - pt
            tdx[j] = dx
            # columns ox with 0 <= ox*sw + dx < W
            tlo[j] = 0 if dx >= 0 else (sw - 1 - dx) // sw
            thi[j] = max(tlo[j], min(ow, (wd - 1 - dx) // sw + 1)) if dx < wd else tlo[j]
        b = bias[o]
        for oy in range(oh):
            yr = yc[oy]
            for i in range(ow):
                yr[i] = b
            if k == 0:
                continue
            if sw == 1:
                _dw_row_s1(xc, yr, oy * sh, h, tw, tdy, tdx, tlo, thi, k)
            elif sw == 2:
                _dw_row_s2(xc, yr, oy * sh, h, tw, tdy, tdx, tlo, thi, k)
            else:
                _dw_row_any(xc, yr, oy * sh, h, sw, tw, tdy, tdx, tlo, thi, k)


@njit(parallel=True)
def _dwconv2d_csr_codebook_parallel(x, kw, sh, sw, dh, dw, pt, pl, og, indptr, cols, codes,
                                    book, book_step, bias, y):
    for t in prange(y.shape[0] * y.shape[1]):
        _dwconv2d_csr_codebook_planes(x, kw, sh, sw, dh, dw, pt, pl, og, indptr, cols, codes,
                                      book, book_step, bias, t, t + 1, y)


def dwconv2d_nchw_csr_codebook(x, w: CsrCodebook, bias, kh: int, kw: int, stride=(1, 1),
                               pad=(0, 0), dilation=(1, 1)) -> np.ndarray:
    """Depthwise convolution on codebook indices (groups = C): output channel o is input
    channel o // (O/C) correlated with row o's (KH, KW) taps. No workspace: the input is read
    in place and the padding is clipped, not copied.

    x (N, C, H, W) float32; w a CsrCodebook of O = m*C rows of KH*KW; bias (O,) or None; pad
    (ph, pw) or (top, left, bottom, right). Returns (N, O, OH, OW) float32.
    """
    what = "dwconv2d_nchw_csr_codebook"
    x = _check_x(x, 4, "(N, C, H, W)", what)
    bias = _check_weight(w, bias, what)
    n, c = x.shape[:2]
    kh, kw, sh, sw, pt, pl, _, _, dh, dw, _, oh, ow = _conv_geometry(
        what, x.shape, w, kh, kw, stride, pad, dilation, c)
    y = np.empty((n, w.rows, oh, ow), dtype=np.float32)
    scaled = w.scale.shape[0] > 0
    args = (x, kw, sh, sw, dh, dw, pt, pl, w.rows // c, w.indptr, w.cols, w.codes, w.book,
            w.book_step, np.zeros_like(bias) if scaled else bias)
    if _parallel(w.nnz * oh * ow * n):
        _dwconv2d_csr_codebook_parallel(*args, y)
    else:
        _dwconv2d_csr_codebook_planes(*args, 0, n * w.rows, y)
    return _finish_scaled(y, w, bias) if scaled else y
