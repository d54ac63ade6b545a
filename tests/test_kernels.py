"""Kernels against their oracles: Numba csr_codebook == NumPy *_ref, scipy and im2col paths ==
naive loops, on hypothesis-drawn shapes, densities (0%, 100%, in between), code widths 1..8 and
16, and all three codebook forms."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.kernels import _jit, dense, sparse
from engine.kernels.csr import CsrCodebook
from engine.kernels.dense import to_scipy_csr
from formats import CodebookTensor, from_dense_codes

needs_numba = pytest.mark.skipif(
    not _jit.HAVE_NUMBA, reason=f"Numba kernels not tested: {_jit.WHY_NO_NUMBA}")

FORMS = ("shared", "per_channel", "scaled")


def make_tensor(rng, shape, density, bits, form) -> CodebookTensor:
    """A random CodebookTensor; density 0.0 and 1.0 are exact."""
    k = 2**bits if bits <= 8 else 1000  # a 16-bit case with codes above 255, without 64K floats
    codes = rng.integers(0, k, size=shape)
    codes[rng.random(shape) >= density] = -1
    o = shape[0]
    book = rng.standard_normal((o, k) if form == "per_channel" else k).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, o).astype(np.float32) if form == "scaled" else None
    t = from_dense_codes(codes, book, bits, scale)
    t.validate()
    return t


@st.composite
def tensors(draw, shape_of):
    """(rng, CodebookTensor) with shape from shape_of(draw)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = shape_of(draw)
    density = draw(st.sampled_from([0.0, 1.0, 0.05, 0.3, 0.7]))
    bits = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 16]))
    form = draw(st.sampled_from(FORMS))
    return rng, make_tensor(rng, shape, density, bits, form)


def conv_case(draw):
    """Draw a conv geometry; returns (weight shape, x shape, stride, pad)."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), kh + 9))
    w = draw(st.integers(max(1, kw - 2 * pw), kw + 9))
    n, c, o = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 6))
    return (o, c, kh, kw), (n, c, h, w), (sh, sw), (ph, pw)


@st.composite
def conv_cases(draw):
    wshape, xshape, stride, pad = conv_case(draw)
    rng, t = draw(tensors(lambda d: wshape))
    x = rng.standard_normal(xshape).astype(np.float32)
    bias = rng.standard_normal(wshape[0]).astype(np.float32) if draw(st.booleans()) else None
    return x, t, bias, stride, pad


@st.composite
def gemm_cases(draw):
    n, i, o = draw(st.integers(1, 9)), draw(st.integers(1, 70)), draw(st.integers(1, 40))
    rng, t = draw(tensors(lambda d: (o, i)))
    x = rng.standard_normal((n, i)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32) if draw(st.booleans()) else None
    return x, t, bias


def assert_close(y, ref, absref):
    """float32 sums against a float64 oracle: error bounded relative to the sum of |terms|."""
    assert y.shape == ref.shape and y.dtype == np.float32
    np.testing.assert_array_less(np.abs(y - ref), 1e-5 * np.abs(absref) + 1e-6)


def dense_weight(t: CodebookTensor) -> np.ndarray:
    """The weight written out from the stored arrays, scale[o] * codebook[o or 0][code], in
    float64 and plain loops: shares no code with the kernels, their references or tensors.py."""
    w = np.zeros((t.rows, t.row_size))
    for o in range(t.rows):
        book = t.codebook[o] if t.codebook.ndim == 2 else t.codebook
        s = 1.0 if t.scale is None else float(t.scale[o])
        for j in range(int(t.indptr[o]), int(t.indptr[o + 1])):
            w[o, int(t.indices[j])] = s * float(book[int(t.codes[j])])
    return w.reshape(t.shape)


def conv_ref(x, t, bias, stride, pad, absolute=False):
    """The kernel's oracle; absolute=True: the same sum over |x| and |w| (the error scale)."""
    o, c, kh, kw = t.shape
    book, scale = t.codebook, t.scale
    if absolute:
        x, book, bias = np.abs(x), np.abs(book), None
        scale = None if scale is None else np.abs(scale)
    return sparse.conv2d_nchw_csr_codebook_ref(x, t.indptr, t.indices, t.codes, book, scale,
                                               bias, kh, kw, stride, pad)


def gemm_ref(x, t, bias, absolute=False):
    book, scale = t.codebook, t.scale
    if absolute:
        x, book, bias = np.abs(x), np.abs(book), None
        scale = None if scale is None else np.abs(scale)
    return sparse.gemm_csr_codebook_ref(x, t.indptr, t.indices, t.codes, book, scale, bias)


def naive_conv(x, w, b, stride, pad):
    """Loops over every output element: the independent oracle for the references."""
    (sh, sw), (ph, pw) = stride, pad
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for i in range(n):
        for f in range(o):
            for oy in range(oh):
                for ox in range(ow):
                    patch = xp[i, :, oy * sh:oy * sh + kh, ox * sw:ox * sw + kw]
                    y[i, f, oy, ox] = np.sum(patch * w[f]) + (0.0 if b is None else b[f])
    return y


# --- Numba kernels == their _ref ----------------------------------------------------------------

def serial_and_parallel(call):
    """call() on the one-thread path and on the prange path (whatever the layer size)."""
    saved = sparse.PARALLEL_MIN_MACS
    try:
        for threshold in (2**62, 0):
            sparse.PARALLEL_MIN_MACS = threshold
            yield call()
    finally:
        sparse.PARALLEL_MIN_MACS = saved


@needs_numba
@given(gemm_cases())
def test_gemm_csr_codebook_matches_ref(case):
    x, t, bias = case
    ref, absref = gemm_ref(x, t, bias), gemm_ref(x, t, bias, absolute=True)
    w = CsrCodebook.of(t)
    for y in serial_and_parallel(lambda: sparse.gemm_csr_codebook(x, w, bias)):
        assert_close(y, ref, absref)


@needs_numba
@given(conv_cases())
def test_conv2d_nchw_csr_codebook_matches_ref(case):
    x, t, bias, stride, pad = case
    ref, absref = conv_ref(x, t, bias, stride, pad), conv_ref(x, t, bias, stride, pad, True)
    w = CsrCodebook.of(t)
    for y in serial_and_parallel(lambda: sparse.conv2d_nchw_csr_codebook(
            x, w, bias, *t.shape[2:], stride, pad)):
        assert_close(y, ref, absref)


@needs_numba
@pytest.mark.parametrize("n", [1, 2, 32])
def test_gemm_csr_codebook_batch_sizes(n):
    rng = np.random.default_rng(n)
    t = make_tensor(rng, (30, 50), 0.2, 5, "shared")
    x = rng.standard_normal((n, 50)).astype(np.float32)
    y = sparse.gemm_csr_codebook(x, CsrCodebook.of(t))
    np.testing.assert_allclose(y, x @ dense_weight(t).T, rtol=1e-5, atol=1e-5)


# --- the references agree with the dense weight ------------------------------------------------

@given(conv_cases())
def test_conv2d_csr_codebook_ref_matches_naive_loop(case):
    x, t, bias, stride, pad = case
    np.testing.assert_allclose(conv_ref(x, t, bias, stride, pad),
                               naive_conv(x, dense_weight(t), bias, stride, pad),
                               rtol=1e-5, atol=1e-5)


@given(gemm_cases())
def test_gemm_csr_codebook_ref_matches_dense_product(case):
    x, t, bias = case
    want = x.astype(np.float64) @ dense_weight(t).T + (0.0 if bias is None else bias)
    np.testing.assert_allclose(gemm_ref(x, t, bias), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_tensor_values_and_dense_follow_the_stored_form(form):
    """CodebookTensor.values/to_dense and CsrCodebook.values (the SciPy path's floats) against
    the plain loop: a scale that is ignored, or applied twice, fails here."""
    t = make_tensor(np.random.default_rng(7), (6, 9), 0.6, 4, form)
    want = dense_weight(t)
    np.testing.assert_allclose(t.to_dense(), want, rtol=1e-6)
    rows, cols = np.nonzero(np.abs(want) > 0)
    np.testing.assert_allclose(CsrCodebook.of(t).values()[np.abs(t.values()) > 0],
                               want[rows, cols], rtol=1e-6)


@needs_numba
@pytest.mark.parametrize("n", [1, 3])
def test_scaled_codebook_multiplies_each_output_once(n):
    """The Numba kernels against the dense product for a scaled codebook whose scales are far
    from 1: an ignored scale is off by a factor of up to 7."""
    rng = np.random.default_rng(n)
    t = make_tensor(rng, (8, 3, 3, 3), 0.5, 3, "scaled")
    t = CodebookTensor(t.shape, t.indptr, t.indices, t.codes, t.codebook,
                       rng.uniform(2, 7, 8).astype(np.float32), t.bits)
    x = rng.standard_normal((n, 3, 6, 6)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    y = sparse.conv2d_nchw_csr_codebook(x, CsrCodebook.of(t), bias, 3, 3)
    np.testing.assert_allclose(y, naive_conv(x, dense_weight(t), bias, (1, 1), (0, 0)),
                               rtol=1e-4, atol=1e-4)
    f = CodebookTensor((8, 27), t.indptr, t.indices, t.codes, t.codebook, t.scale, t.bits)
    xf = rng.standard_normal((n, 27)).astype(np.float32)
    np.testing.assert_allclose(sparse.gemm_csr_codebook(xf, CsrCodebook.of(f), bias),
                               xf @ dense_weight(f).T + bias, rtol=1e-4, atol=1e-4)


# --- NumPy / SciPy paths -------------------------------------------------------------------------

@given(conv_cases())
def test_conv2d_nchw_csr_scipy_matches_ref(case):
    x, t, bias, stride, pad = case
    csr = to_scipy_csr(t.indptr, t.indices, CsrCodebook.of(t).values(), (t.rows, t.row_size))
    y = dense.conv2d_nchw_csr_scipy(x, csr, bias, *t.shape[2:], stride, pad)
    assert_close(y, conv_ref(x, t, bias, stride, pad), conv_ref(x, t, bias, stride, pad, True))


@given(conv_cases())
def test_conv2d_nchw_csr_scipy_on_used_columns_only_matches_ref(case):
    """The op's SciPy path: im2col rows only for the weight columns that hold a nonzero."""
    from engine.ops.conv2d import used_columns

    x, t, bias, stride, pad = case
    used, columns = used_columns(t)
    k = t.row_size if used is None else len(used)
    csr = to_scipy_csr(t.indptr, columns, CsrCodebook.of(t).values(), (t.rows, k))
    y = dense.conv2d_nchw_csr_scipy(x, csr, bias, *t.shape[2:], stride, pad, used)
    assert_close(y, conv_ref(x, t, bias, stride, pad), conv_ref(x, t, bias, stride, pad, True))


@given(gemm_cases())
def test_gemm_csr_scipy_matches_ref(case):
    x, t, bias = case
    csr = to_scipy_csr(t.indptr, t.indices, CsrCodebook.of(t).values(), (t.rows, t.row_size))
    y = dense.gemm_csr_scipy(x, csr, bias)
    assert_close(y, gemm_ref(x, t, bias), gemm_ref(x, t, bias, absolute=True))


@given(conv_cases())
def test_conv2d_nchw_im2col_matches_naive_loop(case):
    x, t, bias, stride, pad = case
    w = dense_weight(t).astype(np.float32)
    y = dense.conv2d_nchw_im2col(x, w, bias, stride, pad)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, naive_conv(x, w, bias, stride, pad), rtol=1e-5, atol=1e-5)


def test_im2col_layout():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    cols = dense.im2col(x, 2, 3, (1, 2), (1, 0))  # (C*KH*KW, N*OH*OW)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)))
    oh, ow = 5, 2
    assert cols.shape == (3 * 2 * 3, 2 * oh * ow)
    for n in range(2):
        for oy in range(oh):
            for ox in range(ow):
                patch = xp[n, :, oy:oy + 2, 2 * ox:2 * ox + 3].ravel()
                np.testing.assert_array_equal(cols[:, (n * oh + oy) * ow + ox], patch)


@given(st.integers(0, 2**32 - 1), st.integers(1, 5), st.integers(1, 5), st.integers(1, 3),
       st.integers(1, 3), st.integers(0, 2), st.integers(1, 9))
def test_maxpool2d_nchw_matches_naive_loop(seed, kh, kw, s, extra, p, h):
    """Windows up to 5x5: the direct taps (<= 9) and the separable path (rows, then columns)."""
    ph, pw = min(p, kh // 2), min(p, kw // 2)
    h = max(h, kh - 2 * ph, kw - 2 * pw)
    x = np.random.default_rng(seed).standard_normal((2, 3, h, h + extra)).astype(np.float32)
    y = dense.maxpool2d_nchw(x, (kh, kw), s, (ph, pw))
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    oh, ow = (h + 2 * ph - kh) // s + 1, (h + extra + 2 * pw - kw) // s + 1
    want = np.array([[[[xp[n, c, i * s:i * s + kh, j * s:j * s + kw].max() for j in range(ow)]
                       for i in range(oh)] for c in range(3)] for n in range(2)])
    np.testing.assert_array_equal(y, want)


def test_gemm_dense():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 7), (5, 7), (5,)))
    np.testing.assert_allclose(dense.gemm(x, w, b), x @ w.T + b, rtol=1e-6)


# --- wrappers name what is wrong -----------------------------------------------------------------

def test_wrappers_reject_bad_inputs():
    """The O(1) checks every kernel call makes: dtype, rank, width against the weight."""
    rng = np.random.default_rng(2)
    t = CsrCodebook.of(make_tensor(rng, (4, 2, 3, 3), 0.5, 4, "shared"))
    with pytest.raises(ValueError, match="float32"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 5, 5)), t, None, 3, 3)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((2, 5, 5), np.float32), t, None, 3, 3)
    with pytest.raises(ValueError, match="input has 1 channels"):  # 1 channel, 2 in the weight
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 1, 5, 5), np.float32), t, None, 3, 3)
    with pytest.raises(ValueError, match="smaller than"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 2, 2), np.float32), t, None, 3, 3)
    with pytest.raises(ValueError, match="bias must be"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 5, 5), np.float32), t,
                                        np.zeros(3, np.float32), 3, 3)
    f = CsrCodebook.of(make_tensor(rng, (4, 6), 0.5, 4, "shared"))
    with pytest.raises(ValueError, match=r"x must be \(N, 6\), got \(1, 5\)"):
        sparse.gemm_csr_codebook(np.zeros((1, 5), np.float32), f)
    with pytest.raises(ValueError, match="inconsistent CsrCodebook"):  # refused when made
        CsrCodebook(f.rows, f.row_size, f.indptr[:-1], f.cols, f.codes, f.book, f.book_step,
                    f.scale)
    with pytest.raises(ValueError, match="inconsistent CsrCodebook"):
        CsrCodebook(f.rows, f.row_size, f.indptr, f.cols, f.codes[1:], f.book, f.book_step,
                    f.scale)
    with pytest.raises(ValueError, match="inconsistent CsrCodebook"):
        CsrCodebook(f.rows, f.row_size, f.indptr, f.cols, f.codes, f.book, 1, f.scale)
    with pytest.raises(ValueError, match="CsrCodebook"):
        sparse.gemm_csr_codebook(np.zeros((1, 6), np.float32), "weights")
    with pytest.raises(ValueError, match=r"\(N, 6\), got \(1, 5\)"):
        dense.gemm(np.zeros((1, 5), np.float32), np.zeros((2, 6), np.float32))


def test_csr_codebook_scans_ranges_once():
    """Out-of-range columns and codes are caught when the weight is prepared (the kernels then
    trust them), with the reason in the message."""
    rng = np.random.default_rng(3)
    t = make_tensor(rng, (4, 6), 0.5, 4, "shared")
    bad_col = CodebookTensor(t.shape, t.indptr, np.full_like(t.indices, 6), t.codes,
                             t.codebook, None, t.bits)
    with pytest.raises(ValueError, match="column index out of range"):
        CsrCodebook.of(bad_col)
    bad_code = CodebookTensor(t.shape, t.indptr, t.indices, np.full_like(t.codes, 200),
                              t.codebook[:5], None, t.bits)
    with pytest.raises(ValueError, match="code out of range"):
        CsrCodebook.of(bad_code)


def test_csr_codebook_keeps_the_stored_arrays():
    """No (O, K) table from a shared codebook and no copies of the stored arrays: what the
    kernels read is what the file decoded to, 3 bytes per nonzero for 8-bit codes."""
    t = make_tensor(np.random.default_rng(4), (64, 100), 0.3, 8, "scaled")
    w = CsrCodebook.of(t)
    assert w.book.shape == (1, t.codebook.shape[0]) and w.book_step == 0
    assert np.shares_memory(w.codes, t.codes) and np.shares_memory(w.cols, t.indices)
    assert w.cols.dtype == np.uint16 and w.nonzero_bytes == 3
    assert w.nbytes < 4 * t.nnz


# --- the one Numba switch ------------------------------------------------------------------------

def test_threads_round_trip():
    before = _jit.get_threads()
    _jit.set_threads(1)
    assert _jit.get_threads() == 1
    _jit.set_threads(before)
    with pytest.raises(ValueError, match="threads"):
        _jit.set_threads(0)


def test_disable_numba_env_falls_back_to_python():
    code = ("from engine.kernels import _jit, check_backend\n"
            "f = lambda a: a\n"
            "assert not _jit.HAVE_NUMBA and _jit.njit(parallel=True)(f) is f\n"
            "assert _jit.prange is range\n"
            "try:\n    check_backend('numba')\nexcept ValueError as e:\n"
            "    assert 'POCKETNN_DISABLE_NUMBA' in str(e)\nelse:\n    raise SystemExit(1)\n")
    env = dict(os.environ, POCKETNN_DISABLE_NUMBA="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], env=env, cwd=root, check=True)
