"""The engine against an independent computation: the trainer's own forward pass (compress/
layers.py, which shares no kernel code with engine/) on the decoded weights, on real images."""

import numpy as np
import pytest

import engine
import formats
from compress.trainer import forward
from engine.cli import DEMO_MODEL
from engine.kernels._jit import HAVE_NUMBA

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])


def _oracle(path, x):
    with formats.open(path) as f:
        dense = {name: (t.to_dense() if isinstance(t, formats.CodebookTensor) else t)
                 for name, t in f.tensors().items()}
    graph = engine.runtime.read_graph(path)
    return forward(graph, dense, x)


@pytest.mark.data
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["random", "demo"])
def test_engine_matches_trainer_forward_on_real_images(which, backend, tiny_pnn, fashion_mnist):
    path = tiny_pnn if which == "random" else DEMO_MODEL
    model = engine.load(path, backend=backend)
    x = model.preprocess(fashion_mnist.x_test[:256])
    got = model.run(x)
    want = _oracle(path, x)
    scale = np.abs(want).max()
    assert got.shape == want.shape == (256, 10)
    assert np.abs(got - want).max() <= 1e-4 * scale + 1e-5


@pytest.mark.skipif(not HAVE_NUMBA, reason="Numba unavailable: one backend to compare")
def test_backends_agree_on_the_demo_model(fashion_mnist):
    x = fashion_mnist.x_test[:512]
    a = engine.load(DEMO_MODEL, backend="numpy")
    b = engine.load(DEMO_MODEL, backend="numba")
    la, lb = a.run(a.preprocess(x)), b.run(b.preprocess(x))
    assert np.abs(la - lb).max() <= 1e-4 * np.abs(la).max()
    assert np.array_equal(la.argmax(1), lb.argmax(1))


def test_load_is_cached_per_file_and_backend(tiny_pnn):
    assert engine.load(tiny_pnn, backend="numpy") is engine.load(tiny_pnn, backend="numpy")
    g1 = engine.runtime.read_graph(tiny_pnn)
    assert engine.load(tiny_pnn, backend="numpy").graph is g1  # decoded once


def test_run_any_batch_size_and_rejects_wrong_shapes(tiny_pnn):
    m = engine.load(tiny_pnn, backend="numpy")
    for n in (1, 3, 17):
        assert m.run(np.zeros((n, 1, 28, 28), np.float32)).shape == (n, 10)
    with pytest.raises(engine.InputError, match="takes"):
        m.run(np.zeros((2, 1, 27, 28), np.float32))
    assert m.preprocess(np.zeros((28, 28), np.uint8)).shape == (1, 1, 28, 28)
    assert m.labels[9] == "Ankle boot"
