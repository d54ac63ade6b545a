"""import_onnx: small hand-built ONNX graphs, one or two ops each with the input an image,
imported, written as .pnn and run through engine.load on both backends against ONNX Runtime
(the ops onnx's own backend cases cover only with 2-d or 3-d inputs live here); the folding;
and the refusals: every unsupported node in one error, damaged, oversized and
external-data files as one line naming the file."""

from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
try:  # the comparisons need ONNX Runtime; the refusals do not
    import onnxruntime as ort
except ImportError:
    ort = None

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import engine  # noqa: E402
import formats  # noqa: E402
from compress.importers import onnx_import  # noqa: E402
from compress.importers.onnx_import import OnnxImportError, import_onnx  # noqa: E402

BACKENDS = ("numba", "numpy")
RNG = np.random.default_rng(0)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(nodes, inits=None, shape=("N", 3, 8, 8), opset=13, out="y", inputs=None,
         out_shape=None, domains=()):
    """A model: input x of `shape`, output `out`, initializers name -> array."""
    x = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "t", inputs or x, [y],
                              [numpy_helper.from_array(np.asarray(v), k)
                               for k, v in (inits or {}).items()])
    ops = [helper.make_opsetid("", opset)]
    ir = helper.find_min_ir_version_for(ops)
    if ir < 4:  # initializers were graph inputs too
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, t.dims)
                           for t in graph.initializer)
    model = helper.make_model(graph, ir_version=ir,
                              opset_imports=ops + [helper.make_opsetid(d, 1) for d in domains])
    return onnx.shape_inference.infer_shapes(model)  # the output's shape: the checker wants one


def N(op, inputs, output="y", **attrs):  # noqa: N802 (a node, as in onnx.helper)
    return helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs)


def run_both(model, x, tmp_path, expect=None, **kw):
    """(ORT's output, or expect(x) where ORT has no kernel, {backend: engine output}, the
    imported graph)."""
    if ort is None and expect is None:
        pytest.skip("onnxruntime is not installed")
    want = expect(x) if expect else ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = import_onnx(model, **kw)
    path = tmp_path / "m.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    return want, {b: engine.load(path, backend=b).run(x) for b in BACKENDS}, graph


W3 = rand(4, 3, 3, 3, scale=0.3)  # a 3x3 conv 3 -> 4 channels
C3 = rand(3)
STATS = {"g": RNG.uniform(0.5, 1.5, 4).astype(np.float32), "b": rand(4),
         "m": rand(4), "v": RNG.uniform(0.5, 2, 4).astype(np.float32)}
CASES = {
    "residual add": (make([N("Relu", ["x"], "r"), N("Add", ["x", "r"])]), {}),
    "add (1, C, 1, 1) constant": (make([N("Add", ["x", "c"])], {"c": rand(1, 3, 1, 1)}), {}),
    "add constant along W": (make([N("Add", ["x", "c"])], {"c": rand(8)}), {}),
    "mul scalar first": (make([N("Mul", ["c", "x"])], {"c": np.float32(-1.5)}), {}),
    "x * sigmoid(x)": (make([N("Sigmoid", ["x"], "s"), N("Mul", ["x", "s"])]), {}),
    "clip opset 9 attributes": (make([N("Clip", ["x"], min=-0.5, max=0.25)], opset=9), {}),
    "clip opset 13 min only": (make([N("Clip", ["x", "lo", ""])], {"lo": np.float32(-0.2)}),
                               {}),
    "relu6 as clip": (make([N("Clip", ["x", "lo", "hi"])],
                           {"lo": np.float32(0), "hi": np.float32(6)}), {"scale": 5}),
    "hardsigmoid": (make([N("HardSigmoid", ["x"], alpha=0.3, beta=0.6)]), {}),
    "hardswish": (make([N("HardSwish", ["x"])], opset=14), {"scale": 4}),
    "concat of two convs": (make([N("Conv", ["x", "w"], "a", pads=[1, 1, 1, 1]),
                                  N("Conv", ["x", "w2"], "b", pads=[1, 1, 1, 1]),
                                  N("Concat", ["a", "b"], axis=-3)],
                                 {"w": W3, "w2": rand(2, 3, 3, 3)}), {}),
    "conv same_lower stride 2": (
        make([N("Conv", ["x", "w", "bias"], auto_pad="SAME_LOWER", strides=[2, 2])],
             {"w": W3, "bias": rand(4)}, shape=("N", 3, 9, 8)), {}),
    "conv dilation 2 asymmetric pads": (
        make([N("Conv", ["x", "w"], dilations=[2, 2], pads=[2, 0, 1, 3])], {"w": W3}), {}),
    "depthwise conv": (make([N("Conv", ["x", "w"], group=3, pads=[0, 1, 2, 1])],
                            {"w": rand(6, 1, 3, 3)}), {}),
    "maxpool ceil": (make([N("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                             ceil_mode=1)], shape=("N", 3, 10, 9)), {}),
    "avgpool same_upper count_include_pad": (
        make([N("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 2],
                auto_pad="SAME_UPPER", count_include_pad=1)], shape=("N", 3, 7, 8)), {}),
    "batchnorm after relu": (make([N("Relu", ["x"], "r"),
                                   N("BatchNormalization", ["r", "g", "b", "m", "v"])],
                                  {k: v[:3] for k, v in STATS.items()}), {}),
    "conv, batchnorm folded": (make([N("Conv", ["x", "w"], "c"),
                                     N("BatchNormalization", ["c", "g", "b", "m", "v"],
                                       epsilon=1e-3)], {"w": W3, **STATS}), {}),
    "conv read twice, batchnorm kept": (
        make([N("Conv", ["x", "w"], "c"), N("BatchNormalization", ["c", "g", "b", "m", "v"], "n"),
              N("Add", ["c", "n"])], {"w": W3, **STATS}), {}),
    "gemm alpha beta transB": (make([N("Flatten", ["x"], "f"),
                                     N("Gemm", ["f", "w", "c"], alpha=0.5, beta=2.0, transB=1)],
                                    {"w": rand(10, 192, scale=0.1), "c": rand(10)}), {}),
    "gemm (1, O) bias": (make([N("GlobalAveragePool", ["x"], "p"), N("Flatten", ["p"], "f"),
                               N("Gemm", ["f", "w", "c"])], {"w": rand(3, 5), "c": rand(1, 5)}),
                         {}),
    "matmul + add is linear": (make([N("Flatten", ["x"], "f"), N("MatMul", ["f", "w"], "m"),
                                     N("Add", ["m", "c"])],
                                    {"w": rand(192, 7, scale=0.1), "c": rand(7)}), {}),
    "softmax opset 11 after flatten": (make([N("Flatten", ["x"], "f"),
                                             N("Softmax", ["f"], axis=1)], opset=11), {}),
    "softmax over channels": (make([N("Softmax", ["x"], axis=1)]), {}),
    "dropout and identity": (make([N("Dropout", ["x", "ratio"], "d"), N("Identity", ["d"])],
                                  {"ratio": np.float32(0.3)}), {}),
    "reshape with 0": (make([N("Reshape", ["x", "s"])], {"s": np.array([0, 0, -1], np.int64)}),
                       {}),
    "unsqueeze then squeeze": (make([N("Unsqueeze", ["x", "a"], "u"),
                                     N("Squeeze", ["u", "a"])],
                                    {"a": np.array([2], np.int64)}), {}),
    "x.view(x.size(0), -1)": (make([
        N("Shape", ["x"], "s"), N("Gather", ["s", "zero"], "n", axis=0),
        N("Unsqueeze", ["n", "axes"], "n1"), N("Concat", ["n1", "minus1"], "t", axis=0),
        N("Reshape", ["x", "t"])],
        {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64),
         "minus1": np.array([-1], np.int64)}, out_shape=["N", 192]), {}),
    "reshape [2, -1] at a fixed batch of 2": (
        make([N("Reshape", ["x", "s"])], {"s": np.array([2, -1], np.int64)}, shape=(2, 3, 8, 8)),
        {}),
    "opset 6 broadcast add along axis 1": (  # ONNX Runtime has no Add-6 kernel
        make([N("Add", ["x", "c"], broadcast=1, axis=1)], {"c": C3}, opset=6),
        {"expect": lambda x: x + C3[:, None, None]}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_onnxruntime(case, tmp_path):
    model, opts = CASES[case]
    x = rand(2, *[d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]],
             scale=opts.get("scale", 1.0))
    want, got, _ = run_both(model, x, tmp_path, opts.get("expect"))
    for backend, y in got.items():
        assert y.shape == want.shape, backend
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                   err_msg=backend)


def test_folding(tmp_path):
    def ops(case):
        return [n.op for n in import_onnx(CASES[case][0]).nodes]

    assert ops("conv, batchnorm folded") == ["conv2d"]
    assert ops("conv read twice, batchnorm kept") == ["conv2d", "batchnorm", "add"]
    assert ops("matmul + add is linear") == ["flatten", "linear"]
    assert ops("dropout and identity") == ["identity"]  # the graph computes nothing
    assert ops("x.view(x.size(0), -1)") == ["flatten"]


def test_float16_tensors(tmp_path):
    model = CASES["conv, batchnorm folded"][0]
    x = rand(2, 3, 8, 8)
    want, got, graph = run_both(model, x, tmp_path, dtype="float16")
    assert {n: t.dtype.name for n, t in graph.tensors.items()} == {
        "w": "float16", "conv_c.bias": "float32"}  # the bias holds BN's shift
    for y in got.values():
        np.testing.assert_allclose(y, want, rtol=0, atol=2e-3 * np.abs(want).max())
    with pytest.raises(ValueError, match="dtype"):
        import_onnx(model, dtype="int8")


# ---- refusals ------------------------------------------------------------------------------------


def test_every_unsupported_node_in_one_error():
    model = make([
        N("LRN", ["x"], "a", size=3),
        N("MaxPool", ["a"], "b", kernel_shape=[2, 2], storage_order=1),
        N("Flatten", ["b"], "c0"), N("Gemm", ["c0", "w"], "c", transA=1),
        helper.make_node("Gelu", ["c"], ["d"], name="gelu", domain="com.example"),
        N("Relu", ["d"], "e"),
        N("Add", ["e", "bad"]),
    ], {"w": rand(2, 2), "bad": rand(2, 4, 1, 1)}, domains=["com.example"], out_shape=["N", 2])
    with pytest.raises(OnnxImportError) as info:
        import_onnx(model)
    text = str(info.value)
    assert "\n" not in text and text.startswith("t: cannot import 4 node(s)")
    for needle in ("op LRN is not supported", "'lrn_a'", "storage_order=1", "'maxpool_b'",
                   "transA=1 (only 0)", "'gemm_c'", "com.example.Gelu", "'gelu'"):
        assert needle in text
    assert [p[0] for p in info.value.problems] == ["lrn_a", "maxpool_b", "gemm_c", "gelu"]


@pytest.mark.parametrize("case, nodes, inits, needle", [
    ("constant varies along the batch", [N("Add", ["x", "c"])], {"c": rand(2, 3, 1, 1)},
     "differs along the batch axis"),
    ("reshape drops the batch", [N("Reshape", ["x", "s"])], {"s": np.array([1, -1])},
     "does not keep the batch"),
    ("weight computed at run time", [N("Relu", ["x"], "w"), N("Conv", ["x", "w"])], {},
     "must be a constant"),
    ("flatten axis 2", [N("Flatten", ["x"], axis=2)], {}, "merges the batch"),
    ("softmax over the batch", [N("Softmax", ["x"], axis=0)], {}, "batch axis"),
    ("gemm transA", [N("Flatten", ["x"], "f"), N("Gemm", ["f", "w"], transA=1)],
     {"w": rand(192, 2)}, r"transA=1 \(only 0\)"),
    ("output is a constant", [N("Identity", ["c"])], {"c": rand(3)}, "output is a constant"),
    ("opset 11 softmax over flattened dims", [N("Softmax", ["x"], axis=1)], {},
     "flattened dims"),
])
def test_refused_with_reason(case, nodes, inits, needle):
    model = make(nodes, {k: np.asarray(v, np.int64 if k == "s" else np.float32)
                         for k, v in inits.items()}, opset=11 if "opset 11" in case else 13)
    with pytest.raises(OnnxImportError, match=needle):
        import_onnx(model)


def test_constant_folding_is_bounded():
    """One 1 M-element constant concatenated 8 times would be 32 MB: refused before it is."""
    model = make([N("Concat", ["c"] * 8, "k", axis=0), N("Add", ["x", "k"])],
                 {"c": np.zeros(1 << 20, np.float32)}, out_shape=["N", 3, 8, 8])
    with pytest.raises(OnnxImportError, match="too large a constant"):
        import_onnx(model)


@pytest.mark.parametrize("shape, needle", [
    ((2, 3, 8), r"\(N, C, H, W\)"), (("N", 3, "H", 8), r"fixed C, H and W"),
])
def test_input_must_be_an_image(shape, needle):
    with pytest.raises(OnnxImportError, match=needle):
        import_onnx(make([N("Relu", ["x"])], shape=shape))


def test_one_input_one_output():
    two = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in "xz"]
    with pytest.raises(OnnxImportError, match="2 inputs"):
        import_onnx(make([N("Add", ["x", "z"])], inputs=two))


@pytest.fixture
def onnx_file(tmp_path):
    model = CASES["concat of two convs"][0]
    path = tmp_path / "m.onnx"
    onnx.save_model(model, path)
    return path


@pytest.mark.parametrize("damage, needle", [
    (lambda b: b[: len(b) // 2], "not a valid ONNX model"),
    (lambda b: b"\xff" * 64, "not a valid ONNX model"),
    (lambda b: b"", "no graph"),
    (lambda b: b"\x08\x07", "no graph"),  # ir_version 7 and nothing else
])
def test_damaged_file_is_one_line_naming_it(onnx_file, damage, needle):
    onnx_file.write_bytes(damage(onnx_file.read_bytes()))
    with pytest.raises(OnnxImportError, match=needle) as info:
        import_onnx(onnx_file)
    assert str(info.value).startswith(f"{onnx_file}: ") and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(OnnxImportError, match="cannot read it"):
        import_onnx(tmp_path / "nope.onnx")


def test_file_over_the_limit_is_not_parsed(onnx_file, monkeypatch):
    monkeypatch.setattr(onnx_import, "MAX_MODEL_BYTES", 100)
    with pytest.raises(OnnxImportError, match="over the limit of 100"):
        import_onnx(onnx_file)


def test_external_data_refused(tmp_path):
    model = CASES["concat of two convs"][0]
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    with pytest.raises(OnnxImportError, match="external file"):
        import_onnx(tmp_path / "m.onnx")


@pytest.mark.parametrize("dims, raw, needle", [
    ([4, 3, 3, 3], b"\0" * 100, "stores 100 bytes, not 432"),
    ([1 << 20, 1 << 20], b"", "over the limit"),
    ([-1, 3], b"", "a dim outside"),
])
def test_tensor_sizes_checked_before_conversion(dims, raw, needle):
    model = make([N("Conv", ["x", "w"])], {"w": W3})
    w = model.graph.initializer[0]
    del w.dims[:]
    w.dims.extend(dims)
    w.raw_data = raw
    with pytest.raises(OnnxImportError, match=needle):
        import_onnx(model)


def test_missing_onnx_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'pocketnn\[onnx\]'"):
        import_onnx("m.onnx")
