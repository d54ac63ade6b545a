"""The op set of mobile networks (docs/OPS.md): every kernel on both backends against its
reference on hypothesis-drawn shapes and attributes, every reference against PyTorch, the
attribute errors with their messages, inputs never written, and the workspace `cost` declares
bounding what a kernel really allocates. Runs without Numba and without torch too (those parts
are then skipped)."""

import itertools
import math
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.ir import Graph, Node
from engine.kernels import _jit
from engine.ops import get_op
from engine.runtime import Model

BACKENDS = ["numpy"] + (["numba"] if _jit.HAVE_NUMBA else [])


def torch_f():
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional


# ---- drawing cases ------------------------------------------------------------------------


def array(rng, shape, scale=1.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


@st.composite
def rngs(draw):
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@st.composite
def values(draw, min_rank=1, max_rank=4):
    """A batch-first float32 value: (N, *sample), sample of min_rank..max_rank dims, values
    spread wide enough to reach the clamps of the hard activations."""
    rank = draw(st.integers(min_rank, max_rank))
    shape = (draw(st.integers(1, 3)), *(draw(st.integers(1, 5)) for _ in range(rank)))
    return array(draw(rngs()), shape, draw(st.sampled_from([0.5, 4.0, 50.0])))


def check(op, attrs, xs, params=None, rtol=1e-5, atol=1e-6):
    """Every backend's kernel == reference, == each other, float32 C-contiguous, of the shape
    infer_shape gives; the inputs are left as they were. Returns the reference output."""
    params = params or {}
    mod = get_op(op)
    want = mod.reference(xs, attrs, params)
    shape = mod.infer_shape(attrs, tuple(x.shape[1:] for x in xs),
                            {r: tuple(np.shape(v)) for r, v in params.items()})
    assert want.shape == (xs[0].shape[0], *shape) and want.dtype == np.float32
    outs = []
    for backend in BACKENDS:
        before = [x.copy() for x in xs]
        y = mod.build(attrs, params, backend)(*xs)
        for x, b in zip(xs, before, strict=True):
            np.testing.assert_array_equal(x, b, err_msg=f"{op} wrote into its input")
        assert y.dtype == np.float32 and y.flags.c_contiguous, (op, backend)
        np.testing.assert_allclose(y, want, rtol=rtol, atol=atol, err_msg=f"{op} {backend}")
        macs, workspace = mod.cost(attrs, tuple(x.shape[1:] for x in xs), shape,
                                   params, backend)
        assert isinstance(macs, int) and isinstance(workspace, int)
        assert macs >= 0 and workspace >= 0
        outs.append(y)
    for y in outs[1:]:  # the backends agree with each other closer than with the oracle
        np.testing.assert_allclose(y, outs[0], rtol=1e-6, atol=1e-6)
    return want


# ---- elementwise ---------------------------------------------------------------------------


@given(values(), st.data())
def test_unary_ops(x, data):
    op = data.draw(st.sampled_from(["clip", "sigmoid", "hardsigmoid", "hardswish", "identity",
                                    "batchnorm"]))
    attrs, params = {}, {}
    if op == "clip":
        bounds = sorted(data.draw(st.lists(st.floats(-10, 10), min_size=2, max_size=2)))
        keep = data.draw(st.sampled_from([(0, 1), (0,), (1,), ()]))
        attrs = {k: bounds[i] for i, k in enumerate(("min", "max")) if i in keep}
    elif op == "hardsigmoid":
        attrs = data.draw(st.fixed_dictionaries({}, optional={
            "alpha": st.floats(-2, 2), "beta": st.floats(-2, 2)}))
    elif op == "batchnorm":
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        params = {"scale": array(rng, x.shape[1]), "shift": array(rng, x.shape[1])}
    check(op, attrs, [x], params)


@st.composite
def broadcast_pair(draw):
    """Two per-sample shapes of one rank that broadcast: each axis equal, or one side 1."""
    rank = draw(st.integers(1, 4))
    a, b = [], []
    for _ in range(rank):
        d = draw(st.integers(1, 4))
        kind = draw(st.sampled_from(["same", "a1", "b1"]))
        a.append(1 if kind == "a1" else d)
        b.append(1 if kind == "b1" else d)
    return tuple(a), tuple(b)


@given(broadcast_pair(), st.sampled_from(["add", "mul"]), st.booleans(), rngs())
def test_binary_ops(shapes, op, constant, rng):
    a, b = shapes
    n = int(rng.integers(1, 4))
    x = array(rng, (n, *a))
    if constant:  # one value and param b, of at most a sample's rank
        b = b[int(rng.integers(0, len(b) + 1)):]
        check(op, {}, [x], {"b": array(rng, b)})
    else:
        check(op, {}, [x, array(rng, (n, *b))])


def test_binary_same_value_twice():
    x = array(np.random.default_rng(1), (2, 3, 4))
    np.testing.assert_allclose(check("mul", {}, [x, x]), x * x, rtol=1e-6)


@given(st.data(), rngs())
def test_concat(data, rng):
    rank = data.draw(st.integers(1, 3))
    base = [data.draw(st.integers(1, 4)) for _ in range(rank)]
    axis = data.draw(st.integers(1, rank))  # batch-first numbering
    k = data.draw(st.integers(1, 5))
    n = int(rng.integers(1, 4))
    xs = []
    for _ in range(k):
        shape = list(base)
        shape[axis - 1] = data.draw(st.integers(1, 3))
        xs.append(array(rng, (n, *shape)))
    spelled = data.draw(st.sampled_from([axis, axis - rank - 1]))  # or counted from the end
    check("concat", {"axis": spelled}, xs)


def test_concat_of_64_values_and_one():
    rng = np.random.default_rng(2)
    xs = [array(rng, (2, 1, 3)) for _ in range(64)]
    assert check("concat", {}, xs).shape == (2, 64, 3)
    assert check("concat", {"axis": -1}, xs[:1]).shape == (2, 1, 3)


@given(values(min_rank=3, max_rank=3))
def test_global_avgpool(x):
    check("global_avgpool", {}, [x])


@given(values(), st.data())
def test_reshape(x, data):
    size = math.prod(x.shape[1:])
    dims, rest = [], size
    for _ in range(data.draw(st.integers(0, 3))):
        d = data.draw(st.sampled_from([f for f in range(1, rest + 1) if rest % f == 0]))
        dims.append(d)
        rest //= d
    dims.append(rest)
    dims = data.draw(st.permutations(dims))
    if data.draw(st.booleans()):
        dims[data.draw(st.integers(0, len(dims) - 1))] = -1
    y = check("reshape", {"shape": list(dims)}, [x])
    assert y.shape[0] == x.shape[0]


# ---- pooling -------------------------------------------------------------------------------


@st.composite
def pool_cases(draw, op, torch_pads=False):
    """(attrs, x): kernel 1..4, stride 1..3 (or absent: the kernel), padding below the kernel
    (at most half of it with torch_pads: PyTorch's limit) as an int, a pair or four sides,
    dilation (max) 1..3, ceil mode, count_include_pad (average); the input at least one window
    big."""
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    mh, mw = (kh // 2, kw // 2) if torch_pads else (kh - 1, kw - 1)
    attrs = {"kernel": [kh, kw] if kh != kw or draw(st.booleans()) else kh}
    if draw(st.booleans()):
        attrs["stride"] = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    pads = [draw(st.integers(0, mh)), draw(st.integers(0, mw)),
            draw(st.integers(0, mh)), draw(st.integers(0, mw))]
    form = draw(st.sampled_from(["none", "int", "pair", "four"]))
    if form == "int":
        pads = [min(mh, mw)] * 4
        attrs["padding"] = pads[0]
    elif form == "pair":
        pads = pads[:2] * 2
        attrs["padding"] = pads[:2]
    elif form == "four":
        attrs["padding"] = pads
    else:
        pads = [0] * 4
    dh = dw = 1
    if op == "maxpool2d" and draw(st.booleans()):
        dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        attrs["dilation"] = [dh, dw]
    if draw(st.booleans()):
        attrs["ceil_mode"] = draw(st.integers(0, 1))
    if op == "avgpool2d" and draw(st.booleans()):
        attrs["count_include_pad"] = draw(st.integers(0, 1))
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    h = draw(st.integers(max(1, span_h - pads[0] - pads[2]), span_h + 8))
    w = draw(st.integers(max(1, span_w - pads[1] - pads[3]), span_w + 8))
    x = array(draw(rngs()), (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w))
    return attrs, x


@given(pool_cases("maxpool2d"))
def test_maxpool2d(case):
    attrs, x = case
    check("maxpool2d", attrs, [x])


@given(pool_cases("avgpool2d"))
def test_avgpool2d(case):
    attrs, x = case
    check("avgpool2d", attrs, [x])


def test_maxpool2d_nan_and_all_padding_windows():
    """NaN wins a window (np.maximum, PyTorch); a dilated window that misses the input is -inf
    (PyTorch gives -inf there too)."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 1, 1] = np.nan
    y = check("maxpool2d", {"kernel": 2}, [x])
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])
    y = check("maxpool2d", {"kernel": [2, 1], "padding": [1, 0], "dilation": [3, 1]},
              [np.ones((1, 1, 2, 1), np.float32)])
    assert y.shape == (1, 1, 1, 1) and y[0, 0, 0, 0] == -np.inf


def test_pool_ceil_mode_drops_a_window_starting_in_the_trailing_padding():
    """5 wide, kernel 2, stride 2, padding 1: ceil gives 4 windows by the formula, the 4th
    would start at 6 >= 5 + 1, in the trailing padding: 3 windows (PyTorch, ONNX)."""
    for op in ("maxpool2d", "avgpool2d"):
        attrs = {"kernel": 2, "stride": 2, "padding": 1, "ceil_mode": 1}
        assert get_op(op).infer_shape(attrs, ((1, 5, 5),), {}) == (1, 3, 3)
        assert get_op(op).infer_shape(attrs | {"ceil_mode": 0}, ((1, 5, 5),), {}) == (1, 3, 3)
        assert get_op(op).infer_shape({"kernel": 3, "stride": 2, "ceil_mode": 1},
                                      ((1, 6, 6),), {}) == (1, 3, 3)


def test_window_count_closed_form_equals_enumeration():
    """The kernels' output size (a closed form) == the oracles' enumerated windows."""
    from engine.kernels.pool import pool_out_size
    from engine.ops.pool_geometry import window_starts

    for size, k, s, d, ceil in itertools.product(range(1, 13), range(1, 5), range(1, 4),
                                                 range(1, 4), (False, True)):
        for p0, p1 in itertools.product(range(k), repeat=2):
            starts = window_starts(size, k, s, p0, p1, d, ceil)
            assert len(starts) == max(pool_out_size(size, k, s, p0, p1, d, ceil), 0)
            assert all(-p0 <= a < size for a in starts)  # every window starts in range
            assert d > 1 or all(a + k > 0 for a in starts)  # and holds an input element


def test_avgpool2d_divisors():
    """count_include_pad counts padding, never the overhang of a ceil-mode window (PyTorch)."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    attrs = {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": 1}
    y = check("avgpool2d", attrs | {"count_include_pad": 1}, [x])
    # PyTorch's answer (and the expected values of the pytorch/pytorch#183528 report)
    np.testing.assert_allclose(y.ravel(), [1.5555556, 3.3333333, 2.0, 6.3333335, 11.0, 6.0,
                                           4.5, 7.5, 4.0], rtol=1e-6)
    y = check("avgpool2d", attrs, [x])
    np.testing.assert_allclose(y.ravel(), [3.5, 5.0, 6.0, 9.5, 11.0, 12.0, 13.5, 15.0, 16.0],
                               rtol=1e-6)


def test_large_windows_pool_separably():
    """A 1500-wide window: 3,000 ufunc calls, not 2.25 million taps."""
    x = array(np.random.default_rng(3), (1, 1, 1500, 1500))
    for op in ("maxpool2d", "avgpool2d"):
        y = get_op(op).build({"kernel": 1500}, {}, "numpy")(x)
        want = x.max() if op == "maxpool2d" else x.mean(dtype=np.float64)
        np.testing.assert_allclose(y.ravel(), [want], rtol=1e-5, atol=1e-7)


# ---- every reference against PyTorch -------------------------------------------------------


@given(pool_cases("maxpool2d", torch_pads=True))
def test_maxpool2d_reference_vs_torch(case):
    torch, F = torch_f()
    attrs, x = case
    top, left, bottom, right = _pads(attrs)
    t = torch.from_numpy(x)
    k, s = attrs["kernel"], attrs.get("stride", attrs["kernel"])
    d, ceil = attrs.get("dilation", 1), bool(attrs.get("ceil_mode", 0))
    if (top, left) == (bottom, right):
        want = F.max_pool2d(t, k, s, (top, left), d, ceil_mode=ceil)
    elif not ceil:  # asymmetric: pad first (PyTorch pads both sides alike)
        want = F.max_pool2d(F.pad(t, (left, right, top, bottom), value=-math.inf), k, s, 0, d)
    else:
        return  # PyTorch cannot say where a ceil-mode window of asymmetric padding may start
    np.testing.assert_array_equal(get_op("maxpool2d").reference([x], attrs, {}), want.numpy())


@given(pool_cases("avgpool2d", torch_pads=True))
def test_avgpool2d_reference_vs_torch(case):
    torch, F = torch_f()
    attrs, x = case
    top, left, bottom, right = _pads(attrs)
    t = torch.from_numpy(x)
    k, s = attrs["kernel"], attrs.get("stride", attrs["kernel"])
    ceil, include = bool(attrs.get("ceil_mode", 0)), bool(attrs.get("count_include_pad", 0))
    if (top, left) == (bottom, right):
        want = F.avg_pool2d(t, k, s, (top, left), ceil, include)
    elif not ceil:  # asymmetric: pad first; without count_include_pad, divide the window
        pad = (left, right, top, bottom)  # sums by those of the input's indicator
        want = F.avg_pool2d(F.pad(t, pad), k, s, 0, count_include_pad=True)
        if not include:
            want = (F.avg_pool2d(F.pad(t, pad), k, s, 0, divisor_override=1)
                    / F.avg_pool2d(F.pad(torch.ones_like(t), pad), k, s, 0, divisor_override=1))
    else:
        return
    np.testing.assert_allclose(get_op("avgpool2d").reference([x], attrs, {}), want.numpy(),
                               rtol=1e-5, atol=1e-6)


def _pads(attrs):
    p = attrs.get("padding", 0)
    if isinstance(p, int):
        return p, p, p, p
    return tuple(p) if len(p) == 4 else (p[0], p[1], p[0], p[1])


@given(values(), st.floats(-6, 6), st.floats(-6, 6))
def test_activations_reference_vs_torch(x, a, b):
    torch, F = torch_f()
    t = torch.from_numpy(x)

    def ref(op, attrs=None):
        return get_op(op).reference([x], attrs or {}, {})

    np.testing.assert_allclose(ref("hardswish"), F.hardswish(t).numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ref("hardsigmoid"), F.hardsigmoid(t).numpy(), rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_allclose(ref("hardsigmoid", {"alpha": 0.2, "beta": b}),
                               torch.clamp(0.2 * t + b, 0, 1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ref("clip", {"min": 0, "max": 6}), F.relu6(t).numpy())
    lo, hi = sorted((a, b))
    np.testing.assert_array_equal(ref("clip", {"min": lo, "max": hi}),
                                  torch.clamp(t, np.float32(lo), np.float32(hi)).numpy())
    np.testing.assert_array_equal(ref("clip", {"max": hi}),
                                  torch.clamp(t, max=np.float32(hi)).numpy())
    np.testing.assert_allclose(ref("sigmoid"), torch.sigmoid(t).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ref("identity"), x)
    if x.ndim >= 2:
        np.testing.assert_allclose(get_op("softmax").reference([x], {"axis": 1}, {}),
                                   torch.softmax(t, 1).numpy(), rtol=1e-5, atol=1e-7)


def test_activations_at_the_extremes_vs_torch():
    torch, F = torch_f()
    x = np.array([[-1e30, -100, -88.8, -3, -0.0, 3, 88.8, 100, 1e30, np.inf, -np.inf]],
                 np.float32)
    t = torch.from_numpy(x)
    for op, want in [("sigmoid", torch.sigmoid(t)), ("hardswish", F.hardswish(t)),
                     ("hardsigmoid", F.hardsigmoid(t))]:
        # below x = -88.7 exp(-x) overflows float32: the kernel says 0, not 3e-39
        got = check(op, {}, [x], atol=1e-37)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=1e-37)
    nan = np.full((1, 3), np.nan, np.float32)
    for op, attrs in [("sigmoid", {}), ("hardswish", {}), ("hardsigmoid", {}),
                      ("clip", {"min": 0, "max": 6})]:
        for backend in BACKENDS:  # NaN stays NaN, as in PyTorch
            assert np.isnan(get_op(op).build(attrs, {}, backend)(nan)).all(), (op, backend)


@given(broadcast_pair(), rngs())
def test_add_mul_reference_vs_torch(shapes, rng):
    torch, _ = torch_f()
    a, b = shapes
    x, y = array(rng, (2, *a)), array(rng, (2, *b))
    c = array(rng, b[1:])
    for op, fn in (("add", torch.add), ("mul", torch.mul)):
        ref = get_op(op).reference
        np.testing.assert_allclose(ref([x, y], {}, {}),
                                   fn(torch.from_numpy(x), torch.from_numpy(y)).numpy(),
                                   rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ref([x], {}, {"b": c}),
                                   fn(torch.from_numpy(x), torch.from_numpy(c)).numpy(),
                                   rtol=1e-6, atol=1e-7)


@given(st.data(), rngs())
def test_concat_reshape_global_avgpool_reference_vs_torch(data, rng):
    torch, F = torch_f()
    x = array(rng, (2, 3, 4, 5))
    parts = [array(rng, (2, data.draw(st.integers(1, 3)), 4, 5)) for _ in range(3)]
    np.testing.assert_array_equal(
        get_op("concat").reference([x, *parts], {"axis": 1}, {}),
        torch.cat([torch.from_numpy(v) for v in (x, *parts)], 1).numpy())
    np.testing.assert_array_equal(
        get_op("concat").reference([x, x], {"axis": -1}, {}),
        torch.cat([torch.from_numpy(x)] * 2, -1).numpy())
    np.testing.assert_array_equal(
        get_op("reshape").reference([x], {"shape": [5, -1, 2]}, {}),
        torch.from_numpy(x).reshape(2, 5, -1, 2).numpy())
    np.testing.assert_allclose(get_op("global_avgpool").reference([x], {}, {}),
                               F.adaptive_avg_pool2d(torch.from_numpy(x), 1).numpy(),
                               rtol=1e-6, atol=1e-7)


@given(rngs(), st.sampled_from([(4,), (4, 5), (4, 3, 5)]))
def test_batchnorm_folded_matches_torch_eval(rng, sample):
    """BatchNorm in eval mode == batchnorm with scale/shift folded as an importer does."""
    torch, _ = torch_f()
    c = sample[0]
    bn = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm2d}[
        len(sample)](c, eps=1e-3)
    gamma, beta, mean = (rng.standard_normal(c) for _ in range(3))
    var = rng.uniform(0.1, 3, c)
    with torch.no_grad():
        for p, v in ((bn.weight, gamma), (bn.bias, beta), (bn.running_mean, mean),
                     (bn.running_var, var)):
            p.copy_(torch.from_numpy(v.astype(np.float32)))
    bn.eval()
    scale = gamma / np.sqrt(var + 1e-3)
    params = {"scale": scale.astype(np.float32), "shift": (beta - mean * scale).astype(np.float32)}
    x = array(rng, (3, *sample), 3.0)
    got = check("batchnorm", {}, [x], params)
    with torch.no_grad():
        want = bn(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("op,attrs,in_shapes,params,match", [
    # unknown attributes and parameter roles, listing what the op knows
    ("clip", {"lo": 0}, [(3,)], {}, r"unknown attribute\(s\) 'lo'; clip knows min, max"),
    ("avgpool2d", {"kernel": 2, "dilation": 2}, [(1, 4, 4)], {},
     r"unknown attribute\(s\) 'dilation'; avgpool2d knows kernel, stride, padding, ceil_mode, "
     r"count_include_pad"),
    ("hardswish", {"alpha": 1}, [(3,)], {}, "hardswish knows none"),
    ("add", {}, [(3,)], {"c": (3,)}, r"unknown parameter role\(s\) 'c'; add takes b"),
    ("batchnorm", {}, [(3, 4)], {"scale": (3,)}, r"missing parameter\(s\) shift"),
    # bools and floats where ints belong
    ("avgpool2d", {"kernel": 2, "count_include_pad": True}, [(1, 4, 4)], {},
     "count_include_pad must be an integer, got True"),
    ("avgpool2d", {"kernel": 2.5}, [(1, 4, 4)], {}, "kernel must be an integer, got 2.5"),
    ("concat", {"axis": 1.0}, [(3, 4)], {}, "axis must be an integer, got 1.0"),
    ("reshape", {"shape": [2, True]}, [(2, 1)], {}, "shape must be an integer, got True"),
    ("clip", {"min": True}, [(3,)], {}, "min must be a finite number, got True"),
    ("clip", {"max": "6"}, [(3,)], {}, "max must be a finite number, got '6'"),
    # out of range
    ("avgpool2d", {"kernel": 2, "ceil_mode": 2}, [(1, 4, 4)], {}, r"ceil_mode=2 outside 0\.\.1"),
    ("avgpool2d", {"kernel": 2, "count_include_pad": -1}, [(1, 4, 4)], {},
     r"count_include_pad=-1 outside 0\.\.1"),
    ("avgpool2d", {"kernel": 2, "stride": 10**20}, [(1, 4, 4)], {},
     r"stride=100000000000000000000 outside 1\.\.16777216"),
    ("avgpool2d", {"kernel": 2, "padding": [0, 0, 0, 2]}, [(1, 4, 4)], {},
     r"padding \[0, 0, 0, 2\] is not below the kernel \[2, 2\] on every side"),
    ("avgpool2d", {"kernel": 2, "padding": [1, 1, 1]}, [(1, 4, 4)], {},
     "padding must be an int or a pair"),
    ("avgpool2d", {"kernel": 5}, [(1, 4, 4)], {}, "smaller than the 5x5 window"),
    ("avgpool2d", {}, [(1, 4, 4)], {}, "missing attr 'kernel'"),
    ("avgpool2d", {"kernel": 2}, [(4, 4)], {}, r"input must be \(C, H, W\)"),
    ("concat", {"axis": 4}, [(3, 4, 4)], {}, r"axis=4 outside -4\.\.3"),
    ("clip", {"min": float("nan")}, [(3,)], {}, "min must be a finite number, got nan"),
    ("clip", {"max": 10**400}, [(3,)], {}, "max must be a finite number"),
    ("clip", {"min": 1e39}, [(3,)], {}, "min=1e.39 is beyond float32"),
    ("clip", {"min": 2, "max": 1}, [(3,)], {}, "min=2.0 is above max=1.0"),
    ("hardsigmoid", {"alpha": -1e39}, [(3,)], {}, "alpha=-1e.39 is beyond float32"),
    # the batch axis
    ("concat", {"axis": 0}, [(3, 4)], {}, "axis=0 is the batch axis of a 3-d value"),
    ("concat", {"axis": -3}, [(3, 4)], {}, "axis=-3 is the batch axis"),
    ("concat", {}, [(3, 4), (3, 5)], {},
     r"input 1 has per-sample shape \(3, 5\), input 0 \(3, 4\): all must agree except along "
     r"axis 1"),
    ("concat", {}, [(3, 4), (3,)], {}, "all must agree"),
    # reshapes that cannot be
    ("reshape", {"shape": [5, -1]}, [(3, 4, 4)], {},
     r"shape \[5, -1\] does not fit \(3, 4, 4\) \(48 values per sample are not a multiple of 5"),
    ("reshape", {"shape": [7, 7]}, [(3, 4, 4)], {}, "holds 49 values per sample, the input"),
    ("reshape", {"shape": [-1, -1]}, [(4,)], {}, "more than one -1"),
    ("reshape", {"shape": [0, 4]}, [(4,)], {}, "holds a 0"),
    ("reshape", {"shape": [-2, 4]}, [(4,)], {}, r"shape=-2 outside -1\.\."),
    ("reshape", {"shape": 4}, [(4,)], {}, "shape must be a list of at most 16 ints"),
    ("reshape", {"shape": [1] * 17}, [(1,)], {}, "at most 16"),
    ("reshape", {}, [(4,)], {}, "missing attr 'shape'"),
    # broadcasts that cannot be
    ("add", {}, [(3, 4, 4), (2, 4, 4)], {},
     r"per-sample shapes \(3, 4, 4\) and \(2, 4, 4\) do not broadcast: axis -3 is 3 against 2"),
    ("mul", {}, [(3, 4, 4)], {"b": (4, 3)}, r"axis -1 is 4 against 3"),
    ("mul", {}, [(3, 4, 4), (4, 4)], {}, "differ in rank; values broadcast batch first"),
    ("add", {}, [(4,)], {"b": (2, 4)}, "more axes than a sample"),
    ("add", {}, [(4,), (4,)], {"b": (4,)}, "two values or one value and param b, not both"),
    ("add", {}, [(4,)], {}, "needs the constant param b"),
    # params of the wrong shape, inputs of the wrong rank
    ("batchnorm", {}, [(3, 4)], {"scale": (3,), "shift": (4,)}, r"shift must be \(3,\)"),
    ("global_avgpool", {}, [(3, 4)], {}, r"input must be \(C, H, W\)"),
])
def test_infer_shape_errors(op, attrs, in_shapes, params, match):
    with pytest.raises(ValueError, match=match):
        get_op(op).infer_shape(attrs, tuple(in_shapes), params)


def test_build_refuses_what_infer_shape_refuses():
    """A kernel built straight from attrs checks them too (build is reachable without a
    planner)."""
    for op, attrs, match in [("clip", {"min": 1, "max": 0}, "above max"),
                             ("avgpool2d", {"kernel": 2, "ceil_mode": True}, "got True"),
                             ("reshape", {"shape": [0]}, "holds a 0"),
                             ("hardsigmoid", {"beta": None}, "finite number, got None")]:
        with pytest.raises(ValueError, match=match):
            get_op(op).build(attrs, {}, "numpy")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        get_op("hardswish").build({}, {}, "cuda")
    with pytest.raises(ValueError, match=r"x must be a float32 \(N, C, H, W\) array, got "
                                         r"float64"):
        get_op("maxpool2d").build({"kernel": 2}, {}, "numpy")(np.zeros((1, 1, 4, 4)))


# ---- the costs they declare ----------------------------------------------------------------

RNG = np.random.default_rng(5)
COST_CASES = [  # big enough that NumPy's ufunc buffers (8,192 elements each) are noise
    ("maxpool2d", {"kernel": 2}, [(4, 32, 48, 48)], {}),
    ("maxpool2d", {"kernel": 3, "stride": 2, "padding": 1, "ceil_mode": 1}, [(4, 32, 55, 55)], {}),
    ("maxpool2d", {"kernel": [1, 3], "dilation": 2, "padding": [0, 1]}, [(4, 32, 40, 40)], {}),
    ("avgpool2d", {"kernel": 3, "stride": 2, "padding": [1, 1, 0, 0], "ceil_mode": 1},
     [(4, 32, 55, 55)], {}),
    ("avgpool2d", {"kernel": [3, 1]}, [(4, 32, 55, 55)], {}),
    ("global_avgpool", {}, [(4, 32, 55, 55)], {}),
    ("batchnorm", {}, [(4, 32, 55, 55)], {"scale": (32,), "shift": (32,)}),
    ("clip", {"min": 0, "max": 6}, [(4, 32, 55, 55)], {}),
    ("sigmoid", {}, [(4, 32, 55, 55)], {}),
    ("hardsigmoid", {}, [(4, 32, 55, 55)], {}),
    ("hardswish", {}, [(4, 32, 55, 55)], {}),
    ("add", {}, [(4, 32, 55, 55), (4, 32, 1, 55)], {}),
    ("mul", {}, [(4, 1, 55, 55)], {"b": (32, 1, 1)}),
    ("concat", {"axis": 2}, [(4, 32, 55, 55), (4, 32, 5, 55)], {}),
    ("reshape", {"shape": [-1]}, [(4, 32, 55, 55)], {}),
    ("identity", {}, [(4, 32, 55, 55)], {}),
]
SLACK = 96 << 10  # NumPy's ufunc buffers and small arrays: a constant, not per sample


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,attrs,shapes,params", COST_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(COST_CASES)])
def test_workspace_declared_bounds_what_is_allocated(op, attrs, shapes, params, backend):
    """tracemalloc's peak during a call, less the output, is within the batch times the
    workspace `cost` declares (plus SLACK)."""
    mod = get_op(op)
    xs = [array(RNG, s) for s in shapes]
    params = {r: array(RNG, s) for r, s in params.items()}
    kernel = mod.build(attrs, params, backend)
    kernel(*xs)  # compiles; caches per-shape state (avgpool's divisors)
    in_shapes = tuple(s[1:] for s in shapes)
    out_shape = mod.infer_shape(attrs, in_shapes, {r: v.shape for r, v in params.items()})
    _, workspace = mod.cost(attrs, in_shapes, out_shape, params, backend)
    tracemalloc.start()
    try:
        y = kernel(*xs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    fresh = 0 if any(np.shares_memory(y, x) for x in xs) else y.nbytes
    assert peak - fresh <= shapes[0][0] * workspace + SLACK, (peak, fresh, workspace)


# ---- in a graph ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_mobile_block_runs_as_a_dag(backend):
    """x -> bn -> hardswish a; a -> avgpool -> sigmoid -> mul a (squeeze-excite style); add a
    (residual); concat with a; maxpool; global pool; reshape; softmax. `a` is read by four
    nodes: no kernel may write into it."""
    rng = np.random.default_rng(7)
    c = 4
    tensors = {"s": array(rng, c), "t": array(rng, c), "b": array(rng, (c, 1, 1))}
    nodes = [
        Node("batchnorm", "bn", ["x"], ["bn"], {}, {"scale": "s", "shift": "t"}),
        Node("hardswish", "hs", ["bn"], ["a"]),
        Node("avgpool2d", "ap", ["a"], ["p"], {"kernel": 8}),
        Node("hardsigmoid", "hsig", ["p"], ["g"]),
        Node("mul", "se", ["a", "g"], ["e"]),
        Node("add", "res", ["e", "a"], ["r"]),
        Node("mul", "scale", ["r"], ["r2"], {}, {"b": "b"}),
        Node("concat", "cat", ["r2", "a"], ["k"], {"axis": 1}),
        Node("maxpool2d", "mp", ["k"], ["m"], {"kernel": 3, "stride": 2, "padding": 1,
                                                "ceil_mode": 1}),
        Node("clip", "relu6", ["m"], ["m6"], {"min": 0, "max": 6}),
        Node("global_avgpool", "gap", ["m6"], ["gp"]),
        Node("reshape", "flat", ["gp"], ["f"], {"shape": [-1]}),
        Node("identity", "drop", ["f"], ["d"]),
        Node("sigmoid", "sig", ["d"], ["sd"]),
        Node("softmax", "sm", ["sd"], ["y"], {"axis": 1}),
    ]
    graph = Graph(nodes, "x", (c, 8, 8), "y", tensors)
    x = array(rng, (3, c, 8, 8), 3.0)
    keep = x.copy()
    y = Model(graph, backend).run(x)
    np.testing.assert_array_equal(x, keep)

    def ref(op, xs, attrs=None, params=None):
        return get_op(op).reference(xs, attrs or {}, params or {})

    a = ref("hardswish", [ref("batchnorm", [x], {}, {"scale": tensors["s"],
                                                      "shift": tensors["t"]})])
    g = ref("hardsigmoid", [ref("avgpool2d", [a], {"kernel": 8})])
    r2 = ref("mul", [ref("add", [ref("mul", [a, g]), a])], {}, {"b": tensors["b"]})
    k = ref("concat", [r2, a], {"axis": 1})
    m = ref("clip", [ref("maxpool2d", [k], nodes[8].attrs)], nodes[9].attrs)
    f = ref("reshape", [ref("global_avgpool", [m])], {"shape": [-1]})
    want = ref("softmax", [ref("sigmoid", [f])], {"axis": 1})
    assert y.shape == (3, 2 * c)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
