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


def conv_ref(x, t, bias, stride, pad, table=None):
    o, c, kh, kw = t.shape
    table = t.row_table() if table is None else table
    return sparse.conv2d_nchw_csr_codebook_ref(x, t.indptr, t.indices, t.codes, table, bias,
                                               kh, kw, *stride, *pad)


def abs_conv_ref(x, t, stride, pad):
    return conv_ref(np.abs(x), t, None, stride, pad, np.abs(t.row_table()))


def gemm_ref(x, t, bias, table=None):
    table = t.row_table() if table is None else table
    return sparse.gemm_csr_codebook_ref(x, t.indptr, t.indices, t.codes, table, bias)


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
    ref, absref = gemm_ref(x, t, bias), gemm_ref(np.abs(x), t, None, np.abs(t.row_table()))
    for y in serial_and_parallel(
            lambda: sparse.gemm_csr_codebook(x, t.indptr, t.indices, t.codes, t.row_table(), bias)):
        assert_close(y, ref, absref)


@needs_numba
@given(conv_cases())
def test_conv2d_nchw_csr_codebook_matches_ref(case):
    x, t, bias, stride, pad = case
    ref, absref = conv_ref(x, t, bias, stride, pad), abs_conv_ref(x, t, stride, pad)
    for y in serial_and_parallel(lambda: sparse.conv2d_nchw_csr_codebook(
            x, t.indptr, t.indices, t.codes, t.row_table(), bias, *t.shape[2:], *stride, *pad)):
        assert_close(y, ref, absref)


@needs_numba
@pytest.mark.parametrize("n", [1, 2, 32])
def test_gemm_csr_codebook_batch_sizes(n):
    rng = np.random.default_rng(n)
    t = make_tensor(rng, (30, 50), 0.2, 5, "shared")
    x = rng.standard_normal((n, 50)).astype(np.float32)
    y = sparse.gemm_csr_codebook(x, t.indptr, t.indices, t.codes, t.row_table())
    np.testing.assert_allclose(y, x @ t.to_dense().T, rtol=1e-5, atol=1e-5)


# --- the references agree with the dense weight ------------------------------------------------

@given(conv_cases())
def test_conv2d_csr_codebook_ref_matches_naive_loop(case):
    x, t, bias, stride, pad = case
    np.testing.assert_allclose(conv_ref(x, t, bias, stride, pad),
                               naive_conv(x, t.to_dense(), bias, stride, pad),
                               rtol=1e-5, atol=1e-5)


# --- NumPy / SciPy paths -------------------------------------------------------------------------

@given(conv_cases())
def test_conv2d_nchw_csr_scipy_matches_ref(case):
    x, t, bias, stride, pad = case
    csr = to_scipy_csr(t.indptr, t.indices, t.values(), (t.rows, t.row_size))
    y = dense.conv2d_nchw_csr_scipy(x, csr, bias, *t.shape[2:], stride, pad)
    assert_close(y, conv_ref(x, t, bias, stride, pad), abs_conv_ref(x, t, stride, pad))


@given(gemm_cases())
def test_gemm_csr_scipy_matches_ref(case):
    x, t, bias = case
    csr = to_scipy_csr(t.indptr, t.indices, t.values(), (t.rows, t.row_size))
    y = dense.gemm_csr_scipy(x, csr, bias)
    assert_close(y, gemm_ref(x, t, bias), gemm_ref(np.abs(x), t, None, np.abs(t.row_table())))


@given(conv_cases())
def test_conv2d_nchw_im2col_matches_naive_loop(case):
    x, t, bias, stride, pad = case
    w = t.to_dense()
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


@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
       st.integers(0, 1), st.integers(1, 9))
def test_maxpool2d_nchw_matches_naive_loop(seed, k, s, extra, p, h):
    p = min(p, k // 2)
    h = max(h, k - 2 * p)
    x = np.random.default_rng(seed).standard_normal((2, 3, h, h + extra)).astype(np.float32)
    y = dense.maxpool2d_nchw(x, k, s, p)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    oh, ow = (h + 2 * p - k) // s + 1, (h + extra + 2 * p - k) // s + 1
    want = np.array([[[[xp[n, c, i * s:i * s + k, j * s:j * s + k].max() for j in range(ow)]
                       for i in range(oh)] for c in range(3)] for n in range(2)])
    np.testing.assert_array_equal(y, want)


def test_gemm_dense():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((3, 7), (5, 7), (5,)))
    np.testing.assert_allclose(dense.gemm(x, w, b), x @ w.T + b, rtol=1e-6)


# --- wrappers name what is wrong -----------------------------------------------------------------

def test_wrappers_reject_bad_inputs():
    rng = np.random.default_rng(2)
    t = make_tensor(rng, (4, 2, 3, 3), 0.5, 4, "shared")
    args = (t.indptr, t.indices, t.codes, t.row_table(), None, 3, 3)
    with pytest.raises(ValueError, match="float32"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 5, 5)), *args)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((2, 5, 5), np.float32), *args)
    with pytest.raises(ValueError, match="column index out of range"):  # 1 channel, 2 in weight
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 1, 5, 5), np.float32), *args)
    with pytest.raises(ValueError, match="smaller than"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 2, 2), np.float32), *args)
    with pytest.raises(ValueError, match="bias must be"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 2, 5, 5), np.float32), *args[:4],
                                        np.zeros(3, np.float32), 3, 3)
    f = make_tensor(rng, (4, 6), 0.5, 4, "shared")
    with pytest.raises(ValueError, match="indptr"):
        sparse.gemm_csr_codebook(np.zeros((1, 6), np.float32), f.indptr[:-1], f.indices,
                                 f.codes, f.row_table())
    with pytest.raises(ValueError, match="codes must be uint8 or uint16"):
        sparse.gemm_csr_codebook(np.zeros((1, 6), np.float32), f.indptr, f.indices,
                                 f.codes.astype(np.int64), f.row_table())
    with pytest.raises(ValueError, match=r"\(N, 6\), got \(1, 5\)"):
        dense.gemm(np.zeros((1, 5), np.float32), np.zeros((2, 6), np.float32))


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
