"""Model zoo graphs and the Fashion-MNIST loader (real files and hand-made bad ones)."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from compress.datasets import (
    FASHION_MNIST_LABELS,
    FASHION_MNIST_PREPROCESS,
    DatasetError,
    load_fashion_mnist,
    subset,
)
from compress.trainer import forward, prepare
from compress.zoo import build, count_params

HOW = "apt-get install dataset-fashion-mnist"


# ---------------------------------------------------------------- zoo

@pytest.mark.parametrize("name,count", [("lenet5", 431_080), ("lenet300", 266_610)])
def test_param_counts(name, count):
    assert count_params(build(name)) == count


@pytest.mark.parametrize("name", ["lenet5", "lenet300"])
def test_forward_shapes_and_conventions(name):
    g = build(name, seed=0)
    assert g.input_name == "input" and g.input_shape == (1, 28, 28)
    assert g.output_name == "logits" and g.nodes[-1].outputs == ["logits"]
    assert g.labels == FASHION_MNIST_LABELS and len(g.labels) == 10
    assert g.preprocess == FASHION_MNIST_PREPROCESS
    assert all(t.dtype == np.float32 for t in g.tensors.values())
    # values chain: each node reads the previous node's output
    prev = "input"
    for node in g.nodes:
        assert node.inputs == [prev]
        prev = node.outputs[0]
    raw = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype(np.uint8)
    logits = forward(g, None, prepare(g, raw))
    assert logits.shape == (3, 10) and logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


def test_lenet5_layout():
    g = build("lenet5")
    assert [(n.name, n.op) for n in g.nodes] == [
        ("conv1", "conv2d"), ("pool1", "maxpool2d"), ("conv2", "conv2d"), ("pool2", "maxpool2d"),
        ("flatten", "flatten"), ("fc1", "linear"), ("relu1", "relu"), ("fc2", "linear")]
    conv1 = g.nodes[0]
    assert conv1.attrs == {"stride": [1, 1], "padding": [0, 0]}
    assert conv1.params == {"weight": "conv1.weight", "bias": "conv1.bias"}
    assert g.nodes[1].attrs == {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}
    assert g.nodes[4].attrs == {"start_dim": 1}
    shapes = {k: v.shape for k, v in g.tensors.items()}
    assert shapes == {"conv1.weight": (20, 1, 5, 5), "conv1.bias": (20,),
                      "conv2.weight": (50, 20, 5, 5), "conv2.bias": (50,),
                      "fc1.weight": (500, 800), "fc1.bias": (500,),
                      "fc2.weight": (10, 500), "fc2.bias": (10,)}


def test_lenet300_layout():
    g = build("lenet300")
    assert [(n.name, n.op) for n in g.nodes] == [
        ("flatten", "flatten"), ("fc1", "linear"), ("relu1", "relu"), ("fc2", "linear"),
        ("relu2", "relu"), ("fc3", "linear")]
    assert g.tensors["fc1.weight"].shape == (300, 784)
    assert g.tensors["fc3.weight"].shape == (10, 100)


def test_init_is_seeded_and_pytorch_like():
    a, b, c = build("lenet5", seed=0), build("lenet5", seed=0), build("lenet5", seed=1)
    for name in a.tensors:
        np.testing.assert_array_equal(a.tensors[name], b.tensors[name])
        assert not np.array_equal(a.tensors[name], c.tensors[name])
    w = a.tensors["conv2.weight"]
    bound = 1 / np.sqrt(20 * 5 * 5)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound


def test_unknown_model():
    with pytest.raises(ValueError, match="resnet"):
        build("resnet")


# ---------------------------------------------------------------- real data

@pytest.mark.data
def test_real_fashion_mnist():
    try:
        ds = load_fashion_mnist()
    except DatasetError as e:
        pytest.fail(str(e), pytrace=False)
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28) and ds.x_test.dtype == np.uint8
    assert ds.y_train.shape == (60000,) and ds.y_train.dtype == np.int64
    assert ds.y_test.shape == (10000,) and ds.y_test.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    x = ds.x_train[:5000].astype(np.float64) / 255
    assert x.mean() == pytest.approx(FASHION_MNIST_PREPROCESS.mean[0], abs=0.01)
    assert x.std() == pytest.approx(FASHION_MNIST_PREPROCESS.std[0], abs=0.01)


# ---------------------------------------------------------------- hand-made files

def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(
        f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_dataset(d, n_train=20, n_test=10, gz=False, **override):
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    files.update(override)
    for stem, arr in files.items():
        data = arr if isinstance(arr, bytes) else idx_bytes(arr)
        if gz:
            (d / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (d / stem).write_bytes(data)
    return files


@pytest.mark.parametrize("gz", [False, True])
def test_small_dataset_loads(tmp_path, gz):
    files = write_dataset(tmp_path, gz=gz)
    ds = load_fashion_mnist(tmp_path, check_counts=False)
    np.testing.assert_array_equal(ds.x_train, files["train-images-idx3-ubyte"])
    assert ds.y_test.dtype == np.int64 and ds.y_test.shape == (10,)


def test_missing_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        load_fashion_mnist(missing)
    msg = str(e.value)
    assert str(missing) in msg and HOW in msg and "--data DIR" in msg and "\n" not in msg


def test_missing_file(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*no such file") as e:
        load_fashion_mnist(tmp_path, check_counts=False)
    assert HOW in str(e.value)


def test_truncated_file(tmp_path):
    good = idx_bytes(np.zeros((20, 28, 28)))
    write_dataset(tmp_path, **{"train-images-idx3-ubyte": good[:-100]})
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.*truncated") as e:
        load_fashion_mnist(tmp_path, check_counts=False)
    assert HOW in str(e.value) and "\n" not in str(e.value)


def test_not_idx(tmp_path):
    write_dataset(tmp_path, gz=True, **{"t10k-images-idx3-ubyte": b"<html>404</html>"})
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz.*not an IDX file"):
        load_fashion_mnist(tmp_path, check_counts=False)


@pytest.mark.parametrize("override,match", [
    ({"train-labels-idx1-ubyte": np.arange(19) % 10}, "19 labels for 20 images"),
    ({"t10k-labels-idx1-ubyte": np.full(10, 10)}, "out of range"),
    ({"train-images-idx3-ubyte": np.zeros((20, 27, 28))}, r"shape \(N, 28, 28\)"),
    ({"train-labels-idx1-ubyte": np.zeros((20, 1))}, "1-D integer label"),
])
def test_malformed(tmp_path, override, match):
    write_dataset(tmp_path, **override)
    with pytest.raises(DatasetError, match=match) as e:
        load_fashion_mnist(tmp_path, check_counts=False)
    assert HOW in str(e.value)


def test_official_counts_checked(tmp_path):
    write_dataset(tmp_path)
    with pytest.raises(DatasetError, match="20 images, expected 60000"):
        load_fashion_mnist(tmp_path)


def test_subset_is_seeded_and_stratified(tmp_path):
    write_dataset(tmp_path, n_train=200, n_test=100)
    ds = load_fashion_mnist(tmp_path, check_counts=False)
    a, b = subset(ds, 50, 30, seed=3), subset(ds, 50, 30, seed=3)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert a.x_train.shape == (50, 28, 28) and a.y_test.shape == (30,)
    np.testing.assert_array_equal(np.bincount(a.y_train), [5] * 10)
    assert not np.array_equal(subset(ds, 50, 30, seed=4).x_train, a.x_train)
    r = subset(ds, 50, 30, seed=3, stratified=False)
    assert r.x_train.shape == (50, 28, 28)
    assert subset(ds, 1000, 1000).x_train.shape == (200, 28, 28)
