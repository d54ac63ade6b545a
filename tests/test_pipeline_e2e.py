"""The whole Deep Compression pipeline on real Fashion-MNIST images, small but the real path:
`python -m compress run` and the single stages, then the result through the engine."""

import os
import subprocess
import sys

import numpy as np
import pytest

import engine
import formats
from compress.pipeline import engine_accuracy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--train-limit", "4000", "--test-limit", "1000", "--quiet"]


def compress_cli(*args, ok=True):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "compress", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


@pytest.mark.data
@pytest.mark.slow
def test_run_lenet300_end_to_end(tmp_path, fashion_mnist):
    out = tmp_path / "lenet300.pnn"
    p = compress_cli("run", "--model", "lenet300", "--out", out, *SMALL, "--train-epochs", "3",
                     "--retrain-epochs", "1", "--finetune-epochs", "1", "--prune-steps", "2")
    for stage in ("float", "pruned", "shared", "huffman"):
        assert f"== {stage} ==" in p.stdout
    assert "engine accuracy" in p.stdout
    size = out.stat().st_size
    assert 4 * 266610 / size > 40  # default densities 4/4.5/13%, 5-bit codebooks
    x, y = fashion_mnist.x_test[:1000], fashion_mnist.y_test[:1000]
    assert engine_accuracy(out, x, y, backend="numpy") > 0.70
    with formats.open(out) as f:
        w = f.tensor("fc1.weight")
    assert isinstance(w, formats.CodebookTensor) and w.bits <= 5  # fc default: 5 bits
    assert w.density == pytest.approx(0.04, abs=0.002)


@pytest.mark.data
def test_same_command_gives_the_same_file(tmp_path, fashion_mnist):
    args = ["--model", "lenet300", "--train-limit", "1000", "--test-limit", "200", "--quiet",
            "--train-epochs", "1", "--retrain-epochs", "1", "--finetune-epochs", "1",
            "--prune-steps", "1"]
    compress_cli("run", *args, "--out", tmp_path / "a.pnn")
    compress_cli("run", *args, "--out", tmp_path / "b.pnn")
    assert (tmp_path / "a.pnn").read_bytes() == (tmp_path / "b.pnn").read_bytes()


@pytest.mark.data
@pytest.mark.slow
def test_single_stages_chain_into_the_same_kind_of_file(tmp_path, fashion_mnist):
    f, pr, q, out = (tmp_path / n for n in ("f.npz", "p.npz", "q.npz", "m.pnn"))
    compress_cli("train", "--model", "lenet5", "--out", f, *SMALL, "--train-epochs", "1")
    compress_cli("prune", "--model", "lenet5", "--init", f, "--out", pr, *SMALL,
                 "--retrain-epochs", "1", "--prune-steps", "1")
    with np.load(pr) as z:
        assert z["mask/conv2.weight"].mean() == pytest.approx(0.06, abs=0.001)
        assert np.all(z["conv2.weight"][~z["mask/conv2.weight"]] == 0)
    compress_cli("quantize", "--model", "lenet5", "--init", pr, "--out", q, *SMALL,
                 "--finetune-epochs", "1")
    with np.load(q) as z:
        assert z["centroids/fc1.weight"].size <= 32  # 5-bit fc default
        codes = z["codes/fc1.weight"]
        assert (codes >= 0).mean() == pytest.approx(0.04, abs=0.001)  # pruning survives
        assert np.all(z["fc1.weight"][codes < 0] == 0)
        assert np.array_equal(z["fc1.weight"][codes >= 0],
                              z["centroids/fc1.weight"][codes[codes >= 0]])
    compress_cli("pack", "--model", "lenet5", "--init", q, "--out", out)
    m = engine.load(out, backend="numpy")
    assert m.run(m.preprocess(fashion_mnist.x_test[:8])).shape == (8, 10)


def test_missing_dataset_is_a_one_line_error(tmp_path):
    p = compress_cli("run", "--model", "lenet5", "--data", tmp_path / "none", "--out",
                     tmp_path / "x.pnn", ok=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    line = p.stderr.strip().splitlines()
    assert len(line) == 1 and "dataset-fashion-mnist" in line[0] and "none" in line[0]
    assert not (tmp_path / "x.pnn").exists()


def test_bad_init_file_is_a_one_line_error(tmp_path, fashion_mnist):
    np.savez(tmp_path / "w.npz", **{"conv1.weight": np.zeros((3, 3), np.float32)})
    p = compress_cli("pack", "--model", "lenet5", "--init", tmp_path / "w.npz", "--out",
                     tmp_path / "x.pnn", ok=False)
    assert "Traceback" not in p.stderr and "w.npz" in p.stderr


def test_a_pnn_as_init_repacks_to_the_same_file(tmp_path):
    from engine.cli import DEMO_MODEL

    out = tmp_path / "again.pnn"
    compress_cli("pack", "--model", "lenet5", "--init", DEMO_MODEL, "--out", out)
    assert out.read_bytes() == DEMO_MODEL.read_bytes()


@pytest.mark.parametrize("make, needle", [
    (lambda p: np.save(p / "one.npy", np.zeros(3)), "one array"),
    (lambda p: (p / "one.npy").write_bytes(b"junk"), "not a weights .npz"),
])
def test_init_that_is_not_weights(tmp_path, make, needle):
    make(tmp_path)
    p = compress_cli("pack", "--model", "lenet5", "--init", tmp_path / "one.npy", "--out",
                     tmp_path / "x.pnn", ok=False)
    assert "Traceback" not in p.stderr and needle in p.stderr and "one.npy" in p.stderr
    assert not (tmp_path / "x.pnn").exists()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_bias_storage(tmp_path, dtype, fashion_mnist):
    """Biases are stored as asked; the engine computes in float32 either way and the answers
    match the float32-bias model to float16 precision."""
    from engine.cli import DEMO_MODEL

    out = tmp_path / f"{dtype}.pnn"
    compress_cli("pack", "--model", "lenet5", "--init", DEMO_MODEL, "--out", out,
                 "--bias-dtype", dtype)
    with formats.open(out) as f:
        assert f.info("fc1.bias").encoding == {"float16": "f16", "float32": "f32"}[dtype]
        assert f.tensor("fc1.bias").dtype == np.dtype(dtype)
    x = fashion_mnist.x_test[:200]
    exact = engine.load(DEMO_MODEL, backend="numpy")
    m = engine.load(out, backend="numpy")
    a, b = exact.run(exact.preprocess(x)), m.run(m.preprocess(x))
    assert b.dtype == np.float32
    assert np.abs(a - b).max() <= 1e-3 * np.abs(a).max()
