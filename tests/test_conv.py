"""conv2d as mobile networks use it, every kernel path against the op's reference on
hypothesis-drawn geometry: kernel sizes, strides, dilations, asymmetric padding, groups (1, 2,
depthwise with 1 or 2 filters per channel), batch 1 and more, densities 0, sparse and 1, and the
three codebook forms. The reference itself is held against PyTorch and a plain loop.

Paths: Numba conv2d_nchw_csr_codebook (any geometry), conv2d_1x1_nchw_spmm_codebook (pointwise),
dwconv2d_nchw_csr_codebook (depthwise) and dwconv2d_nchw_direct (its dense weight); NumPy
conv2d_nchw_csr_scipy (block-diagonal CSR over groups), dwconv2d_nchw_shifted (codebook and
dense) and conv2d_nchw_im2col (per group).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.kernels import _jit, dense, sparse
from engine.kernels.csr import CsrCodebook
from engine.ops import get_op
from formats import CodebookTensor, from_dense_codes

conv = get_op("conv2d")
needs_numba = pytest.mark.skipif(
    not _jit.HAVE_NUMBA, reason=f"Numba kernels not tested: {_jit.WHY_NO_NUMBA}")
FORMS = ("shared", "per_channel", "scaled")


def make_tensor(rng, shape, density, bits, form) -> CodebookTensor:
    """A random CodebookTensor; density 0.0 and 1.0 are exact."""
    k = 2**bits if bits <= 8 else 1000  # 16 bits: codes above 255 without 64K floats
    codes = rng.integers(0, k, size=shape)
    codes[rng.random(shape) >= density] = -1
    o = shape[0]
    book = rng.standard_normal((o, k) if form == "per_channel" else k).astype(np.float32)
    scale = rng.uniform(0.1, 2.0, o).astype(np.float32) if form == "scaled" else None
    return from_dense_codes(codes, book, bits, scale)


def dense_weight(t: CodebookTensor) -> np.ndarray:
    """scale[o] * codebook[o or 0][code] at each stored position, in plain loops (shares no
    code with the kernels or tensors.py)."""
    w = np.zeros((t.rows, t.row_size), dtype=np.float32)
    for o in range(t.rows):
        book = t.codebook[o] if t.codebook.ndim == 2 else t.codebook
        s = 1.0 if t.scale is None else float(t.scale[o])
        for j in range(int(t.indptr[o]), int(t.indptr[o + 1])):
            w[o, int(t.indices[j])] = s * float(book[int(t.codes[j])])
    return w.reshape(t.shape)


# --- drawn cases -------------------------------------------------------------------------------

@st.composite
def convs(draw, kind="any"):
    """(x, weight tensor, bias, attrs); kind: "any", "pointwise" or "depthwise"."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "pointwise":
        kh = kw = 1
        dil, pad = (1, 1), [0, 0, 0, 0]
    else:
        kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
        dil = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        pad = [draw(st.integers(0, 3)) for _ in range(4)]  # top, left, bottom, right
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if kind == "depthwise":
        c = draw(st.integers(1, 5))
        groups, cg, o = c, 1, c * draw(st.integers(1, 2))
    else:
        groups = draw(st.sampled_from([1, 1, 2, 3]))
        cg = draw(st.integers(1, 3))
        c, o = cg * groups, groups * draw(st.integers(1, 3))
    eh, ew = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1  # the dilated kernel
    h = draw(st.integers(max(1, eh - pad[0] - pad[2]), eh + 10))
    w = draw(st.integers(max(1, ew - pad[1] - pad[3]), ew + 10))
    n = draw(st.sampled_from([1, 1, 2, 3]))
    density = draw(st.sampled_from([0.0, 0.3, 0.6, 1.0]))
    bits = draw(st.sampled_from([2, 4, 8, 16]))
    t = make_tensor(rng, (o, cg, kh, kw), density, bits, draw(st.sampled_from(FORMS)))
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32) if draw(st.booleans()) else None
    # padding in each of its three forms when they say the same
    if pad[0] == pad[2] and pad[1] == pad[3]:
        pad = draw(st.sampled_from([pad, pad[:2]] + ([pad[0]] if pad[0] == pad[1] else [])))
    attrs = {"stride": list(stride), "padding": pad, "dilation": list(dil), "groups": groups}
    return x, t, bias, attrs


def reference(x, weight, bias, attrs, absolute=False):
    """The op's reference; absolute=True: the same sum over |x| and |w| (the error scale)."""
    if absolute:
        x, weight, bias = np.abs(x), np.abs(weight), None
    return conv.reference([x], attrs, {"weight": weight, "bias": bias})


def assert_close(y, x, weight, bias, attrs):
    """float32 sums in any order: error bounded relative to the sum of |terms|."""
    want = reference(x, weight, bias, attrs)
    scale = reference(x, weight, bias, attrs, absolute=True)
    assert y.shape == want.shape and y.dtype == np.float32
    np.testing.assert_array_less(np.abs(y - want), 2e-5 * scale + 1e-5)


def run(attrs, params, backend, x, kernel=None):
    k = conv.build(attrs, params, backend)
    assert kernel is None or k.name == kernel
    shapes = {r: tuple(v.shape) for r, v in params.items() if v is not None}
    y = k(x)
    assert conv.infer_shape(attrs, (x.shape[1:],), shapes) == y.shape[1:]
    return y


def serial_and_parallel(call):
    """call() on the one-thread path and on the prange path (whatever the layer size)."""
    saved = sparse.PARALLEL_MIN_MACS
    try:
        for threshold in (2**62, 0):
            sparse.PARALLEL_MIN_MACS = threshold
            yield call()
    finally:
        sparse.PARALLEL_MIN_MACS = saved


# --- Numba kernels on codes ---------------------------------------------------------------------

@needs_numba
@given(convs(), st.sampled_from([(1, 1), (1 << 30, 16), (256, 2048)]))
def test_conv2d_nchw_csr_codebook(case, blocking):
    """Row by row, in blocks of rows (small ones: several, the last one partial) and as
    configured."""
    x, t, bias, attrs = case
    w = CsrCodebook.of(t)
    g = conv.geometry(attrs)
    saved = sparse.CONV_RUN_MIN, sparse.CONV_ACC_FLOATS
    sparse.CONV_RUN_MIN, sparse.CONV_ACC_FLOATS = blocking
    try:
        for y in serial_and_parallel(lambda: sparse.conv2d_nchw_csr_codebook(
                x, w, bias, *t.shape[2:], g.stride, g.padding, g.dilation, g.groups)):
            assert_close(y, x, dense_weight(t), bias, attrs)
    finally:
        sparse.CONV_RUN_MIN, sparse.CONV_ACC_FLOATS = saved


@needs_numba
@given(convs("pointwise"), st.sampled_from([3, 16, 256]))
def test_conv2d_1x1_nchw_spmm_codebook(case, block):
    """Pixel blocks of 3 and 16 too: several blocks and a partial one on small images."""
    x, t, bias, attrs = case
    saved = sparse.SPMM_BLOCK
    sparse.SPMM_BLOCK = block
    try:
        w, g = CsrCodebook.of(t), conv.geometry(attrs)
        for y in serial_and_parallel(lambda: sparse.conv2d_1x1_nchw_spmm_codebook(
                x, w, bias, g.stride, g.groups)):
            assert_close(y, x, dense_weight(t), bias, attrs)
    finally:
        sparse.SPMM_BLOCK = saved


@needs_numba
@given(convs("depthwise"))
def test_dwconv2d_nchw_csr_codebook(case):
    x, t, bias, attrs = case
    want = "dwconv2d_nchw_csr_codebook" if attrs["groups"] > 1 else None  # 1 channel: not dw
    for y in serial_and_parallel(lambda: run(attrs, {"weight": t, "bias": bias}, "numba", x,
                                             want)):
        assert_close(y, x, dense_weight(t), bias, attrs)


@needs_numba
@given(convs("depthwise"))
def test_dwconv2d_nchw_direct_dense_weight(case):
    x, t, bias, attrs = case
    wd = dense_weight(t)
    want = "dwconv2d_nchw_direct" if attrs["groups"] > 1 else None
    assert_close(run(attrs, {"weight": wd, "bias": bias}, "numba", x, want), x, wd, bias, attrs)


# --- NumPy / SciPy paths ------------------------------------------------------------------------

@given(convs())
def test_conv2d_nchw_csr_scipy(case):
    """The block-diagonal CSR over groups, with or without the used-columns im2col."""
    x, t, bias, attrs = case
    want = ("dwconv2d_nchw_shifted" if t.shape[1] == 1 and attrs["groups"] > 1
            else "conv2d_nchw_csr_scipy")
    y = run(attrs, {"weight": t, "bias": bias}, "numpy", x, want)
    assert_close(y, x, dense_weight(t), bias, attrs)


@given(convs("depthwise"), st.booleans())
def test_dwconv2d_nchw_shifted(case, as_dense):
    """Codebook taps (gathered channels, or all of them at density 1) and dense weights (in
    channel blocks: a small block size makes several)."""
    x, t, bias, attrs = case
    if attrs["groups"] == 1:
        return  # one input channel, groups 1: not depthwise (the general paths above)
    wd = dense_weight(t)
    saved = dense.DW_BLOCK_BYTES
    dense.DW_BLOCK_BYTES = 64
    try:
        y = run(attrs, {"weight": wd if as_dense else t, "bias": bias}, "numpy", x,
                "dwconv2d_nchw_shifted")
    finally:
        dense.DW_BLOCK_BYTES = saved
    assert_close(y, x, wd, bias, attrs)


@given(convs())
def test_conv2d_nchw_im2col(case):
    x, t, bias, attrs = case
    wd = dense_weight(t)
    g = conv.geometry(attrs)
    y = dense.conv2d_nchw_im2col(x, wd, bias, g.stride, g.padding, g.dilation, g.groups)
    assert_close(y, x, wd, bias, attrs)


# --- the references -----------------------------------------------------------------------------

def naive_conv(x, w, b, attrs):
    """Every output element as a sum over its window: a loop that shares nothing with the
    op's reference or the kernels."""
    g = conv.geometry(attrs)
    (sh, sw), (pt, pl, pb, pr), (dh, dw) = g.stride, g.padding, g.dilation
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // g.groups
    xp = np.zeros((n, c, h + pt + pb, wd + pl + pr))
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, o, oh, ow))
    for f in range(o):
        c0 = (f // og) * cg
        for oy in range(oh):
            for ox in range(ow):
                win = xp[:, c0:c0 + cg, oy * sh:oy * sh + dh * (kh - 1) + 1:dh,
                         ox * sw:ox * sw + dw * (kw - 1) + 1:dw]
                y[:, f, oy, ox] = (win * w[f]).sum(axis=(1, 2, 3)) + (0 if b is None else b[f])
    return y


@given(convs())
def test_reference_matches_naive_loop(case):
    x, t, bias, attrs = case
    wd = dense_weight(t)
    np.testing.assert_allclose(reference(x, wd, bias, attrs), naive_conv(x, wd, bias, attrs),
                               rtol=1e-4, atol=1e-4)


@given(convs())
def test_references_match_torch(case):
    """The op's reference and the float64 oracle on codes against torch.nn.functional.conv2d
    (asymmetric padding by F.pad first)."""
    torch = pytest.importorskip("torch")
    x, t, bias, attrs = case
    wd = dense_weight(t)
    g = conv.geometry(attrs)
    pt, pl, pb, pr = g.padding
    xt = torch.nn.functional.pad(torch.from_numpy(x).double(), (pl, pr, pt, pb))
    bt = None if bias is None else torch.from_numpy(bias).double()
    want = torch.nn.functional.conv2d(xt, torch.from_numpy(wd).double(), bt, stride=g.stride,
                                      dilation=g.dilation, groups=g.groups).numpy()
    np.testing.assert_allclose(reference(x, wd, bias, attrs), want, rtol=1e-4, atol=1e-4)
    on_codes = sparse.conv2d_nchw_csr_codebook_ref(
        x, t.indptr, t.indices, t.codes, t.codebook, t.scale, bias, *t.shape[2:], g.stride,
        g.padding, g.dilation, g.groups)
    np.testing.assert_allclose(on_codes, want, rtol=1e-5, atol=1e-5)


# --- what the kernels hold and cost -------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", pytest.param("numba", marks=needs_numba)])
@pytest.mark.parametrize("shape,attrs", [((96, 1, 3, 3), {"groups": 96, "padding": 1}),
                                         ((24, 96, 1, 1), {}),
                                         ((32, 16, 3, 3), {"groups": 2, "stride": 2})])
def test_codebook_weight_never_inflated(backend, shape, attrs):
    """The sparse paths keep the nonzeros as stored (Numba: the decoded arrays themselves, 3
    bytes each and the int64 row pointers) or as float values with indices (NumPy): never a
    dense float weight (4 / 0.35 = 11.4 bytes a nonzero), never a block-diagonal one. A
    depthwise row holds about 3 nonzeros, so its row pointer adds 2.7 bytes to each."""
    t = make_tensor(np.random.default_rng(0), shape, 0.35, 4, "shared")
    k = conv.build(attrs, {"weight": t}, backend)
    per_nonzero = 3 if backend == "numba" else 8
    assert k.resident <= per_nonzero * t.nnz + 8 * (t.rows + 1) + 4 * 16
    if backend == "numba":
        assert k.info["bytes_per_nonzero"] == pytest.approx(3 + 8 * (t.rows + 1) / t.nnz)
        assert k.info["bytes_per_nonzero"] < (4 if shape[1] > 1 else 6)


def test_cost_is_honest_for_mobile_layers():
    """Multiply-adds: the nonzeros times the output pixels (plus the copies a path makes);
    workspace: none for the depthwise and pointwise Numba kernels, never a KH*KW-fold copy of
    a depthwise input on the NumPy path."""
    rng = np.random.default_rng(1)
    dw = make_tensor(rng, (96, 1, 3, 3), 0.35, 4, "shared")
    pw = make_tensor(rng, (24, 96, 1, 1), 0.35, 4, "shared")
    attrs = {"groups": 96, "padding": 1}
    if _jit.HAVE_NUMBA:
        macs, ws = conv.cost(attrs, ((96, 56, 56),), (96, 56, 56), {"weight": dw}, "numba")
        assert (macs, ws) == (dw.nnz * 56 * 56 + 96 * 56 * 56, 0)
        macs, ws = conv.cost({}, ((96, 56, 56),), (24, 56, 56), {"weight": pw}, "numba")
        assert macs == pw.nnz * 56 * 56 + 24 * 56 * 56 and ws < 4096
    macs, ws = conv.cost(attrs, ((96, 56, 56),), (96, 56, 56), {"weight": dw}, "numpy")
    assert dw.nnz * 56 * 56 <= macs <= 4 * dw.nnz * 56 * 56
    assert ws <= 3 * 4 * 96 * 56 * 56  # a tap's gathered channels, not 9x the input
    macs, ws = conv.cost(attrs, ((96, 56, 56),), (96, 56, 56),
                         {"weight": dense_weight(dw)}, "numpy")
    assert ws <= 4 * 96 * 56 * 56


@needs_numba
def test_kernels_refuse_what_does_not_fit():
    """The O(1) per-call checks: channels against groups and the weight's rows."""
    rng = np.random.default_rng(2)
    dw = CsrCodebook.of(make_tensor(rng, (8, 1, 3, 3), 0.5, 4, "shared"))
    with pytest.raises(ValueError, match="groups=3 must divide"):  # 8 filters on 3 channels
        sparse.dwconv2d_nchw_csr_codebook(np.zeros((1, 3, 5, 5), np.float32), dw, None, 3, 3)
    pw = CsrCodebook.of(make_tensor(rng, (6, 4, 1, 1), 0.5, 4, "shared"))
    with pytest.raises(ValueError, match="not C/groups"):
        sparse.conv2d_1x1_nchw_spmm_codebook(np.zeros((1, 6, 5, 5), np.float32), pw, None)
    with pytest.raises(ValueError, match="groups=4 must divide"):
        sparse.conv2d_nchw_csr_codebook(np.zeros((1, 6, 5, 5), np.float32), pw, None, 1, 1,
                                        groups=4)
    with pytest.raises(ValueError, match="dilated by"):
        sparse.dwconv2d_nchw_csr_codebook(np.zeros((1, 8, 5, 5), np.float32), dw, None, 3, 3,
                                          dilation=(3, 1))
    with pytest.raises(ValueError, match="float32"):
        sparse.conv2d_1x1_nchw_spmm_codebook(np.zeros((1, 4, 5, 5)), pw, None)
