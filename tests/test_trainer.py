"""The NumPy trainer: every op's backward against central finite differences (float64), shared
and masked parameters, determinism, and a short real training run."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from compress import layers
from compress.datasets import DatasetError, load_fashion_mnist, subset
from compress.params import Dense, Shared
from compress.trainer import (
    TrainConfig,
    evaluate,
    forward,
    loss_and_grads,
    params_from_graph,
    train,
    weights_of,
)
from compress.zoo import build
from engine.ir import Graph, Node, Preprocess
from formats import from_dense_codes

EPS = 1e-6


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    """Central differences of the scalar f() with respect to x (modified in place, restored)."""
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + EPS
        fp = f()
        x[i] = old - EPS
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * EPS)
    return g


def check_op(op, x: np.ndarray, p: dict, attrs: dict) -> None:
    """Check dx and every d param of op against finite differences of sum(y * r)."""
    rng = np.random.default_rng(1)
    y, cache = op.forward(x, p, attrs)
    r = rng.standard_normal(y.shape)
    dx, dparams = op.backward(r, cache, need_dx=True)
    assert dx.dtype == np.float64

    def f():
        return float((op.forward(x, p, attrs)[0] * r).sum())

    np.testing.assert_allclose(dx, numeric_grad(f, x), rtol=1e-5, atol=1e-7)
    assert set(dparams) == set(p)
    for role, arr in p.items():
        np.testing.assert_allclose(dparams[role], numeric_grad(f, arr), rtol=1e-5, atol=1e-7,
                                   err_msg=role)


@pytest.mark.parametrize("stride,padding,shape", [
    (1, 0, (2, 3, 7, 6)),
    (2, 1, (2, 3, 7, 8)),
    ([2, 1], [0, 2], (1, 2, 6, 5)),
])
def test_conv2d_grad(stride, padding, shape):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    p = {"weight": rng.standard_normal((4, shape[1], 3, 3)), "bias": rng.standard_normal(4)}
    check_op(layers.Conv2d, x, p, {"stride": stride, "padding": padding})


def test_conv2d_matches_direct_loop():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 7, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    y, _ = layers.Conv2d.forward(x, {"weight": w, "bias": b}, {"stride": [2, 2],
                                                               "padding": [1, 1]})
    assert y.dtype == np.float32 and y.shape == (2, 4, 4, 4)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    ref = np.zeros(y.shape)
    for i in range(4):
        for j in range(4):
            patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            ref[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + b
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_linear_grad():
    rng = np.random.default_rng(0)
    p = {"weight": rng.standard_normal((5, 7)), "bias": rng.standard_normal(5)}
    check_op(layers.Linear, rng.standard_normal((3, 7)), p, {})


def test_relu_grad():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6))
    x[np.abs(x) < 1e-3] = 0.5  # keep finite differences away from the kink
    check_op(layers.ReLU, x, {}, {})


@pytest.mark.parametrize("attrs", [
    {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]},
    {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1]},  # overlapping windows, padding
    {"kernel": [3, 2], "stride": [2, 1], "padding": [0, 0]},
])
def test_maxpool2d_grad(attrs):
    rng = np.random.default_rng(0)
    x = rng.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) / 10.0  # distinct values: no ties
    check_op(layers.MaxPool2d, x, {}, attrs)


def test_maxpool2d_ties_route_to_one_position():
    x = np.ones((1, 1, 4, 4))
    attrs = {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    y, cache = layers.MaxPool2d.forward(x, {}, attrs)
    np.testing.assert_array_equal(y, np.ones((1, 1, 2, 2)))
    dy = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    dx, _ = layers.MaxPool2d.backward(dy, cache)
    # each window's gradient goes to its first (top-left) element only
    expected = np.zeros((4, 4))
    expected[::2, ::2] = dy[0, 0]
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_flatten_grad():
    rng = np.random.default_rng(0)
    check_op(layers.Flatten, rng.standard_normal((2, 3, 2, 2)), {}, {"start_dim": 1})


def test_softmax_grad():
    rng = np.random.default_rng(0)
    check_op(layers.Softmax, rng.standard_normal((3, 5)), {}, {})


def test_softmax_cross_entropy_grad():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 6)) * 3
    labels = np.array([0, 5, 2, 2])
    loss, grad = layers.softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(4), labels]).mean())
    num = numeric_grad(lambda: layers.softmax_cross_entropy(logits, labels)[0], logits)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-8)
    # huge logits stay finite
    loss, grad = layers.softmax_cross_entropy(np.array([[1000.0, -1000.0]]), np.array([0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))


def small_graph(dtype=np.float64) -> Graph:
    """conv(stride 2, pad 1) -> maxpool -> relu -> conv -> flatten -> linear -> relu -> linear."""
    rng = np.random.default_rng(0)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.5).astype(dtype)

    nodes = [
        Node("conv2d", "c1", ["input"], ["c1"], {"stride": [2, 2], "padding": [1, 1]},
             {"weight": "c1.weight", "bias": "c1.bias"}),
        Node("maxpool2d", "p1", ["c1"], ["p1"], {"kernel": [2, 2], "stride": [2, 2],
                                                  "padding": [0, 0]}),
        Node("relu", "r1", ["p1"], ["r1"]),
        Node("conv2d", "c2", ["r1"], ["c2"], {"stride": [1, 1], "padding": [1, 1]},
             {"weight": "c2.weight", "bias": "c2.bias"}),
        Node("flatten", "flatten", ["c2"], ["flatten"], {"start_dim": 1}),
        Node("linear", "fc1", ["flatten"], ["fc1"], {}, {"weight": "fc1.weight",
                                                         "bias": "fc1.bias"}),
        Node("relu", "r2", ["fc1"], ["r2"]),
        Node("linear", "fc2", ["r2"], ["logits"], {}, {"weight": "fc2.weight",
                                                       "bias": "fc2.bias"}),
    ]
    tensors = {"c1.weight": t(3, 2, 3, 3), "c1.bias": t(3), "c2.weight": t(4, 3, 3, 3),
               "c2.bias": t(4), "fc1.weight": t(6, 16), "fc1.bias": t(6),
               "fc2.weight": t(3, 6), "fc2.bias": t(3)}
    return Graph(nodes=nodes, input_name="input", input_shape=(2, 8, 8), output_name="logits",
                 tensors=tensors, labels=["a", "b", "c"],
                 preprocess=Preprocess(scale=1 / 255, mean=[0.5, 0.5], std=[0.25, 0.25]))


def test_whole_graph_grads():
    g = small_graph()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 8, 8))
    labels = np.array([0, 2, 1])
    weights = dict(g.tensors)
    loss, grads = loss_and_grads(g, weights, x, labels)
    assert set(grads) == set(weights)
    for name, w in weights.items():
        num = numeric_grad(lambda: loss_and_grads(g, weights, x, labels)[0], w)
        np.testing.assert_allclose(grads[name], num, rtol=1e-4, atol=1e-8, err_msg=name)


def test_forward_matches_loss_path_and_batches():
    g = small_graph(np.float32)
    x = np.random.default_rng(0).standard_normal((7, 2, 8, 8)).astype(np.float32)
    whole = forward(g, None, x, batch_size=100)
    assert whole.shape == (7, 3) and whole.dtype == np.float32
    np.testing.assert_allclose(forward(g, g.tensors, x, batch_size=3), whole, rtol=1e-6)


@pytest.mark.parametrize("per_channel", [False, True])
def test_forward_accepts_codebook_tensors(per_channel):
    g = small_graph(np.float32)
    rng = np.random.default_rng(2)
    codes = rng.integers(-1, 4, size=g.tensors["c2.weight"].shape)
    book = rng.standard_normal((4, 4) if per_channel else 4).astype(np.float32)
    shared = Shared(codes, book)
    x = rng.standard_normal((5, 2, 8, 8)).astype(np.float32)
    dense = forward(g, {**g.tensors, "c2.weight": shared.weight()}, x)
    g.tensors["c2.weight"] = from_dense_codes(codes, book, bits=2)
    np.testing.assert_allclose(forward(g, None, x), dense, rtol=1e-6)
    np.testing.assert_allclose(forward(g, dict(g.tensors), x), dense, rtol=1e-6)


def test_unknown_op_is_named():
    g = small_graph()
    g.nodes[2] = Node("gelu", "r1", ["p1"], ["r1"])
    with pytest.raises(ValueError, match="gelu"):
        forward(g, None, np.zeros((1, 2, 8, 8)))


@pytest.mark.parametrize("per_channel", [False, True])
def test_shared_centroid_grad_is_sum_and_matches_fd(per_channel):
    g = small_graph()
    rng = np.random.default_rng(5)
    name = "fc1.weight"
    k = 4
    codes = rng.integers(-1, k, size=g.tensors[name].shape)
    centroids = rng.standard_normal((6, k) if per_channel else k)
    shared = Shared(codes, centroids)
    assert shared.centroids.dtype == np.float64
    w = shared.weight()
    assert np.all(w[codes == -1] == 0)
    x = rng.standard_normal((3, 2, 8, 8))
    labels = np.array([1, 0, 2])
    weights = dict(g.tensors)

    def loss():
        weights[name] = shared.weight()
        return loss_and_grads(g, weights, x, labels)[0]

    loss()
    dw = loss_and_grads(g, weights, x, labels)[1][name]
    dc = shared.project_grad(dw)
    # the sum of the dense gradients per cluster (and per row when per channel)
    expected = np.zeros_like(shared.centroids)
    for idx in np.ndindex(codes.shape):
        if codes[idx] >= 0:
            if per_channel:
                expected[idx[0], codes[idx]] += dw[idx]
            else:
                expected[codes[idx]] += dw[idx]
    np.testing.assert_allclose(dc, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dc, numeric_grad(loss, shared.centroids), rtol=1e-4, atol=1e-8)


def random_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.integers(0, 256, size=(n, 2, 8, 8)).astype(np.uint8)
    x[y == 0, 0] //= 4   # make the classes learnable
    x[y == 1, 1] //= 4
    return x, y


def test_dense_mask_keeps_pruned_weights_zero():
    g = small_graph(np.float32)
    params = params_from_graph(g)
    rng = np.random.default_rng(0)
    masks = {}
    for name in ("c2.weight", "fc1.weight"):
        masks[name] = rng.random(params[name].value.shape) < 0.4
        params[name] = Dense(params[name].value, masks[name])
    codes = rng.integers(-1, 3, size=g.tensors["fc2.weight"].shape)
    params["fc2.weight"] = Shared(codes, np.array([-0.5, 0.1, 0.6], np.float32))
    before = weights_of(params)
    x, y = random_images(50)
    train(g, params, x, y, TrainConfig(epochs=3, lr=0.05, batch_size=16), progress=False)
    after = weights_of(params)
    for name, mask in masks.items():
        assert np.all(after[name][~mask] == 0.0), name
        assert not np.array_equal(after[name][mask], before[name][mask])
    assert np.all(after["fc2.weight"][codes == -1] == 0.0)
    assert len(np.unique(after["fc2.weight"][codes >= 0])) <= 3
    assert all(a.dtype == np.float32 for a in after.values())


def test_training_is_deterministic_and_reduces_loss():
    g = small_graph(np.float32)
    x, y = random_images(200)
    cfg = TrainConfig(epochs=4, lr=0.05, batch_size=32, seed=7)
    runs = []
    for seed in (7, 7, 8):
        params = params_from_graph(g)
        losses = train(g, params, x, y, TrainConfig(**{**cfg.__dict__, "seed": seed}),
                       progress=False)
        runs.append((losses, weights_of(params)))
    (l1, w1), (l2, w2), (l3, w3) = runs
    assert l1 == l2
    for name in w1:
        np.testing.assert_array_equal(w1[name], w2[name])
    assert l1 != l3
    assert l1[-1] < l1[0]


def test_cosine_schedule():
    cfg = TrainConfig(lr=0.1)
    assert cfg.lr_at(0, 100) == pytest.approx(0.1)
    assert cfg.lr_at(50, 100) == pytest.approx(0.05)
    assert cfg.lr_at(100, 100) == pytest.approx(0.0)
    assert TrainConfig(lr=0.1, schedule="constant").lr_at(99, 100) == 0.1
    with pytest.raises(ValueError, match="step"):
        TrainConfig(schedule="step").lr_at(0, 1)


@functools.lru_cache(maxsize=1)
def _fashion():
    return load_fashion_mnist()


def fashion():
    """The real data, or a failure (not a skip) carrying DatasetError's one-line message."""
    try:
        return _fashion()
    except DatasetError as e:
        pytest.fail(str(e), pytrace=False)


@pytest.mark.data
def test_lenet300_learns_fashion_mnist():
    ds = subset(fashion(), 3000, 1000, seed=0)
    g = build("lenet300", seed=0)
    params = params_from_graph(g)
    losses = train(g, params, ds.x_train, ds.y_train,
                   TrainConfig(epochs=2, lr=0.05, seed=0), progress=False)
    assert losses[1] < losses[0]
    acc = evaluate(g, weights_of(params), ds.x_test, ds.y_test)
    assert acc > 0.70, acc
