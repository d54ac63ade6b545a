"""Every op: build(...) on each backend == reference, infer_shape == the real shape, and clear
errors. Runs without Numba too (POCKETNN_DISABLE_NUMBA=1): the numba backend is then skipped."""

import numpy as np
import pytest
from scipy.signal import correlate

from engine.kernels import _jit
from engine.ops import OPS, get_op
from formats import CodebookTensor, from_dense_codes

BACKENDS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(
    not _jit.HAVE_NUMBA, reason=f"numba backend unavailable: {_jit.WHY_NO_NUMBA}"))]
rng = np.random.default_rng(0)


def rand(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def codebook(shape, density=0.3, bits=5, form="shared"):
    codes = rng.integers(0, 2**bits, size=shape)
    codes[rng.random(shape) >= density] = -1
    o = shape[0]
    book = rand(o, 2**bits) if form == "per_channel" else rand(2**bits)
    scale = rng.uniform(0.5, 2, o).astype(np.float32) if form == "scaled" else None
    return from_dense_codes(codes, book, bits, scale)


def dense_params(params):
    return {k: v.to_dense() if isinstance(v, CodebookTensor) else v for k, v in params.items()}


def check(op, attrs, x, params=None, backend="numpy", kernel=None):
    """build(...)(x) == reference(x, dense params), and infer_shape == the output shape."""
    params = params or {}
    mod = get_op(op)
    k = mod.build(attrs, params, backend)
    y = k(x)
    want = mod.reference([x], attrs, dense_params(params))
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    shapes = {r: tuple(v.shape) for r, v in params.items()}
    assert mod.infer_shape(attrs, (x.shape[1:],), shapes) == y.shape[1:]
    assert y.dtype == np.float32
    if kernel is not None:
        assert k.name == kernel
    return k


CONV = [({"stride": [1, 1], "padding": [0, 0]}, (2, 3, 9, 8), (4, 3, 3, 3)),
        ({"stride": 2, "padding": 1}, (1, 2, 7, 7), (5, 2, 5, 5)),
        ({"stride": [2, 1], "padding": [2, 0]}, (3, 1, 6, 5), (2, 1, 1, 4)),
        ({}, (1, 1, 28, 28), (20, 1, 5, 5))]
CONV_KERNELS = {"numpy": "conv2d_nchw_csr_scipy", "numba": "conv2d_nchw_csr_codebook"}
GEMM_KERNELS = {"numpy": "gemm_csr_scipy", "numba": "gemm_csr_codebook"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("attrs,xs,ws", CONV)
def test_conv2d_dense(backend, attrs, xs, ws):
    check("conv2d", attrs, rand(*xs), {"weight": rand(*ws), "bias": rand(ws[0])}, backend,
          "conv2d_nchw_im2col")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["shared", "per_channel", "scaled"])
@pytest.mark.parametrize("attrs,xs,ws", CONV)
def test_conv2d_codebook(backend, form, attrs, xs, ws):
    check("conv2d", attrs, rand(*xs), {"weight": codebook(ws, form=form)}, backend,
          CONV_KERNELS[backend])


# (attrs, x shape, weight shape, kernel per weight form and backend) of mobile networks' convs
MOBILE_CONV = [
    ({"stride": 1, "padding": 1, "groups": 8}, (2, 8, 9, 7), (8, 1, 3, 3), "dw"),
    ({"stride": 2, "padding": [1, 1, 0, 0], "groups": 6}, (1, 6, 9, 8), (12, 1, 3, 3), "dw"),
    ({}, (2, 8, 5, 6), (4, 8, 1, 1), "pw"),
    ({"stride": 2, "groups": 2}, (1, 6, 7, 7), (4, 3, 1, 1), "pw"),
    ({"stride": 2, "padding": 3}, (1, 3, 16, 15), (4, 3, 7, 7), "any"),
    ({"dilation": [2, 1], "padding": [2, 1, 1, 0], "groups": 2}, (2, 4, 8, 8), (6, 2, 3, 3),
     "any"),
]
MOBILE_KERNELS = {
    ("codebook", "numba"): {"dw": "dwconv2d_nchw_csr_codebook", "any": "conv2d_nchw_csr_codebook",
                            "pw": "conv2d_1x1_nchw_spmm_codebook"},
    ("codebook", "numpy"): {"dw": "dwconv2d_nchw_shifted", "pw": "conv2d_nchw_csr_scipy",
                            "any": "conv2d_nchw_csr_scipy"},
    ("dense", "numba"): {"dw": "dwconv2d_nchw_direct", "pw": "conv2d_nchw_im2col",
                         "any": "conv2d_nchw_im2col"},
    ("dense", "numpy"): {"dw": "dwconv2d_nchw_shifted", "pw": "conv2d_nchw_im2col",
                         "any": "conv2d_nchw_im2col"},
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", ["dense", "shared", "scaled"])
@pytest.mark.parametrize("attrs,xs,ws,k", MOBILE_CONV)
def test_conv2d_mobile_forms(backend, form, attrs, xs, ws, k):
    """Depthwise, pointwise, strided, dilated, grouped and asymmetrically padded convs."""
    weight = rand(*ws) if form == "dense" else codebook(ws, density=0.5, form=form)
    kind = "dense" if form == "dense" else "codebook"
    check("conv2d", attrs, rand(*xs), {"weight": weight, "bias": rand(ws[0])}, backend,
          MOBILE_KERNELS[kind, backend][k])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("density", [0.0, 0.04, 1.0])
@pytest.mark.parametrize("n", [1, 5])
def test_linear(backend, density, n):
    w = codebook((10, 30), density, bits=8, form="scaled")
    check("linear", {}, rand(n, 30), {"weight": w, "bias": rand(10)}, backend,
          GEMM_KERNELS[backend])
    check("linear", {}, rand(n, 30), {"weight": w.to_dense()}, backend, "gemm")


@pytest.mark.parametrize("backend", BACKENDS)
def test_elementwise_and_shape_ops(backend):
    x = rand(2, 3, 7, 6)
    check("relu", {}, x, backend=backend)
    check("maxpool2d", {"kernel": [2, 2]}, x, backend=backend)
    check("maxpool2d", {"kernel": 3, "stride": [2, 1], "padding": 1}, x, backend=backend)
    check("maxpool2d", {"kernel": 3, "stride": 2, "padding": [1, 0, 0, 1], "ceil_mode": 1}, x,
          backend=backend)
    check("maxpool2d", {"kernel": [2, 3], "dilation": [2, 1], "ceil_mode": 1}, x,
          backend=backend)
    check("flatten", {"start_dim": 1}, x, backend=backend)
    check("flatten", {"start_dim": 2}, x, backend=backend)
    check("softmax", {"axis": 1}, rand(4, 10) * 100, backend=backend)


def test_conv2d_reference_matches_scipy_correlate():
    x, w, b = rand(2, 3, 8, 7), rand(4, 3, 3, 2), rand(4)
    want = np.stack([[correlate(x[n], w[o], mode="valid")[0] + b[o] for o in range(4)]
                     for n in range(2)])
    got = OPS["conv2d"].reference([x], {}, {"weight": w, "bias": b})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    strided = OPS["conv2d"].reference([x], {"stride": 2, "padding": 1},
                                      {"weight": w, "bias": b})
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    full = np.stack([[correlate(xp[n], w[o], mode="valid")[0] + b[o] for o in range(4)]
                     for n in range(2)])
    np.testing.assert_allclose(strided, full[:, :, ::2, ::2], rtol=1e-5, atol=1e-5)


def test_softmax_is_stable_and_normalised():
    y = OPS["softmax"].build({"axis": 1}, {}, "numpy")(np.array([[1000.0, 0, -1000]], np.float32))
    assert np.all(np.isfinite(y)) and np.allclose(y.sum(axis=1), 1)


def test_maxpool2d_floor_mode_shape():
    assert OPS["maxpool2d"].infer_shape({"kernel": [2, 2]}, ((20, 25, 25),), {}) == (20, 12, 12)
    assert OPS["maxpool2d"].infer_shape({"kernel": [2, 2], "ceil_mode": 1}, ((20, 25, 25),),
                                        {}) == (20, 13, 13)


def test_unknown_op():
    with pytest.raises(ValueError, match=r"unknown op 'conv3d'; known ops: add, .*conv2d, "):
        get_op("conv3d")


@pytest.mark.parametrize("op,attrs,in_shape,params,match", [
    ("conv2d", {}, (3, 8, 8), {"weight": (4, 2, 3, 3)}, "input has 3 channels"),
    ("conv2d", {}, (2, 2, 2), {"weight": (4, 2, 3, 3)}, "smaller than the 3x3 kernel"),
    ("conv2d", {}, (2, 8, 8), {"weight": (4, 2, 3, 3), "bias": (5,)}, r"bias must be \(4,\)"),
    ("conv2d", {"groups": 2}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     r"input has 2 channels, weight \(4, 2, 3, 3\) with groups=2 expects 4"),
    ("conv2d", {"groups": 3}, (6, 8, 8), {"weight": (4, 2, 3, 3)},
     "groups=3 does not divide the weight's 4 output channels"),
    ("conv2d", {"groups": 0}, (2, 8, 8), {"weight": (4, 2, 3, 3)}, "groups=0 outside 1.."),
    ("conv2d", {"dilation": [4, 4]}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     r"smaller than the 3x3 kernel dilated by \(4, 4\)"),
    ("conv2d", {"padding": [1, 2, 3]}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     "padding must be an int or a pair"),
    ("conv2d", {}, (8, 8), {"weight": (4, 2, 3, 3)}, r"input must be \(C, H, W\)"),
    ("linear", {}, (3, 4, 4), {"weight": (10, 48)}, "flatten first"),
    ("linear", {}, (47,), {"weight": (10, 48)}, r"input must be \(48,\)"),
    ("maxpool2d", {}, (3, 4, 4), {}, "missing attr 'kernel'"),
    ("maxpool2d", {"kernel": 2, "padding": 2}, (3, 4, 4), {}, "is not below the kernel"),
    ("maxpool2d", {"kernel": 5}, (3, 4, 4), {}, "smaller than the 5x5 window"),
    ("flatten", {"start_dim": 0}, (3, 4, 4), {}, "batch dim 0 cannot be merged"),
    ("softmax", {"axis": 3}, (10,), {}, "axis=3 outside -2..1"),
    # what a file may say that an op does not honour: refused, listing what the op knows
    ("maxpool2d", {"kernel": 2, "storage_order": 1}, (3, 4, 4), {},
     r"unknown attribute\(s\) 'storage_order'; maxpool2d knows kernel, stride, padding, "
     r"dilation, ceil_mode"),
    ("maxpool2d", {"kernel": 2, "ceil_mode": True}, (3, 4, 4), {},
     "ceil_mode must be an integer, got True"),
    ("maxpool2d", {"kernel": 2, "ceil_mode": 2}, (3, 4, 4), {}, r"ceil_mode=2 outside 0\.\.1"),
    ("maxpool2d", {"kernel": 3, "padding": [1, 1, 3, 1]}, (3, 4, 4), {},
     r"padding \[1, 1, 3, 1\] is not below the kernel \[3, 3\] on every side"),
    ("maxpool2d", {"kernel": 2, "dilation": 0}, (3, 4, 4), {}, "dilation=0 outside 1.."),
    ("maxpool2d", {"kernel": 2, "dilation": 4}, (3, 4, 4), {},
     r"smaller than the 2x2 window dilated \[4, 4\]"),
    ("conv2d", {"pads": [1, 1, 1, 1]}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     r"unknown attribute\(s\) 'pads'; conv2d knows stride, padding, dilation, groups"),
    ("relu", {"alpha": 0.1}, (3,), {}, "relu knows none"),
    ("conv2d", {}, (2, 8, 8), {"weight": (4, 2, 3, 3), "scale": (4,)},
     r"unknown parameter role\(s\) 'scale'; conv2d takes weight, bias"),
    ("relu", {}, (3,), {"weight": (3,)}, "relu takes no parameters"),
    ("linear", {}, (48,), {"bias": (10,)}, r"missing parameter\(s\) weight"),
    # integers from a hostile file: never past MAX_INT, never a bool or a float
    ("conv2d", {"stride": 10**20}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     "stride=100000000000000000000 outside 1..16777216"),
    ("conv2d", {"padding": [0, -1]}, (2, 8, 8), {"weight": (4, 2, 3, 3)}, "padding=-1 outside"),
    ("conv2d", {"stride": True}, (2, 8, 8), {"weight": (4, 2, 3, 3)},
     "stride must be an integer, got True"),
    ("maxpool2d", {"kernel": 2.0}, (3, 4, 4), {}, "kernel must be an integer, got 2.0"),
    ("maxpool2d", {"kernel": [2, 2, 2]}, (3, 4, 4), {}, "kernel must be an int or a pair"),
    ("maxpool2d", {"kernel": 2, "stride": 0}, (3, 4, 4), {}, "stride=0 outside 1.."),
    ("flatten", {"start_dim": "1"}, (3, 4, 4), {}, "start_dim must be an integer"),
])
def test_infer_shape_errors(op, attrs, in_shape, params, match):
    with pytest.raises(ValueError, match=match):
        get_op(op).infer_shape(attrs, (in_shape,), params)


def test_backend_errors():
    w = {"weight": codebook((4, 6))}
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        get_op("linear").build({}, w, "cuda")
    if not _jit.HAVE_NUMBA:
        with pytest.raises(ValueError, match="backend 'numba' requested"):
            get_op("linear").build({}, w, "numba")


def test_kernel_rejects_wrong_input():
    k = get_op("linear").build({}, {"weight": rand(4, 6)}, "numpy")
    with pytest.raises(ValueError, match=r"x must be \(N, 6\)"):
        k(rand(2, 5))
