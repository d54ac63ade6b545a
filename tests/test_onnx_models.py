"""Real networks exported by PyTorch, imported with import_onnx, written as .pnn files and run
through engine.load on both backends, against ONNX Runtime on the same .onnx file:
max|engine - ORT| / max|ORT logit| <= 1e-4, and for MobileNetV2 (its ImageNet weights) on
three photos the same top-5 classes as ORT.

The exports differ on purpose: MobileNetV2 opset 13 in eval mode (PyTorch folds its
BatchNorms, ReLU6 is Clip with constant inputs), ResNet-18 opset 17 keeping BatchNormalization
nodes (our importer folds them; BN statistics are randomised) and its flatten as
x.view(x.size(0), -1) (Shape -> Gather -> Unsqueeze -> Concat -> Reshape, folded), SqueezeNet
1.1 opset 11 (Concat, ceil-mode max pooling). ResNet-18 and SqueezeNet run at 96 and 99
pixels: the same ops, the ceil-mode pools on odd sizes, a fraction of the time at 224.

    python tests/test_onnx_models.py --write docs/ONNX.md    # the figures there
"""

from __future__ import annotations

import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
import formats  # noqa: E402
from compress.importers.onnx_import import import_onnx  # noqa: E402
from engine.ir import Preprocess  # noqa: E402
from tests import onnx_models  # noqa: E402

TOLERANCE = 1e-4  # max |engine - ORT| / max |ORT logit|
BACKENDS = ("numba", "numpy")
IMAGENET = Preprocess(scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                      resize=256)
PHOTOS = ("astronaut", "chelsea", "coffee")  # skimage.data
CATS = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@dataclass(frozen=True)
class Spec:
    build: object
    side: int
    opset: int
    training: str  # torch.onnx.TrainingMode: EVAL folds BatchNorm in PyTorch, PRESERVE keeps it


SPECS = {
    "mobilenet_v2": Spec(onnx_models.mobilenet_v2, 224, 13, "EVAL"),
    "resnet18": Spec(onnx_models.resnet18, 96, 17, "PRESERVE"),
    "squeezenet1_1": Spec(onnx_models.squeezenet1_1, 99, 11, "EVAL"),
}


def export(name: str, path: Path) -> Path:
    spec = SPECS[name]
    model = spec.build()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 3, spec.side, spec.side), buf, dynamo=False,
                          opset_version=spec.opset,
                          training=getattr(torch.onnx.TrainingMode, spec.training),
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    path.write_bytes(buf.getvalue())
    return path


class Zoo:
    """Exported .onnx files, their .pnn imports and ORT sessions, made once per session."""

    def __init__(self, root: Path):
        self.root, self._onnx, self._pnn, self._ort = root, {}, {}, {}

    def onnx(self, name: str) -> Path:
        if name not in self._onnx:
            self._onnx[name] = export(name, self.root / f"{name}.onnx")
        return self._onnx[name]

    def graph(self, name: str):
        graph = import_onnx(self.onnx(name))
        if name == "mobilenet_v2":
            graph.preprocess = IMAGENET
        return graph

    def pnn(self, name: str) -> Path:
        if name not in self._pnn:
            graph = self.graph(name)
            path = self.root / f"{name}.pnn"
            formats.write(path, graph.to_metadata(), graph.tensors)
            self._pnn[name] = path
        return self._pnn[name]

    def ort(self, name: str, x: np.ndarray) -> np.ndarray:
        if name not in self._ort:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            self._ort[name] = ort.InferenceSession(str(self.onnx(name)), options,
                                                   providers=["CPUExecutionProvider"])
        return self._ort[name].run(None, {"image": x})[0]

    def engine(self, name: str, backend: str, x: np.ndarray) -> np.ndarray:
        return engine.load(self.pnn(name), backend=backend).run(x)


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    return Zoo(tmp_path_factory.mktemp("onnx-models"))


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def random_input(name: str, n: int = 3) -> np.ndarray:
    side = SPECS[name].side
    return np.random.default_rng(7).standard_normal((n, 3, side, side)).astype(np.float32)


def photos() -> np.ndarray:
    """skimage's astronaut, chelsea and coffee as uint8 (3, 3, 224, 224): shorter side
    resized to 256 (bilinear), centre crop 224, as for torchvision's ImageNet models."""
    data = pytest.importorskip("skimage.data")
    image = pytest.importorskip("PIL.Image")
    out = []
    for name in PHOTOS:
        im = image.fromarray(getattr(data, name)())
        scale = 256 / min(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)),
                       image.Resampling.BILINEAR)
        left, top = (im.width - 224) // 2, (im.height - 224) // 2
        out.append(np.asarray(im.crop((left, top, left + 224, top + 224))).transpose(2, 0, 1))
    return np.stack(out)


def top5(logits: np.ndarray) -> list[list[int]]:
    return np.argsort(-logits, axis=1, kind="stable")[:, :5].tolist()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(SPECS))
def test_random_inputs_match_onnxruntime(zoo, name, backend):
    x = random_input(name)
    want = zoo.ort(name, x)
    got = zoo.engine(name, backend, x)
    assert got.shape == want.shape == (3, 1000)
    assert relative_error(got, want) <= TOLERANCE


@pytest.mark.parametrize("backend", BACKENDS)
def test_mobilenet_v2_photos_same_top5_as_onnxruntime(zoo, backend):
    raw = photos()
    model = engine.load(zoo.pnn("mobilenet_v2"), backend=backend)
    x = model.preprocess(raw)  # the ImageNet normalisation stored in the .pnn
    want = zoo.ort("mobilenet_v2", x)
    got = model.run(x)
    assert relative_error(got, want) <= TOLERANCE
    assert top5(got) == top5(want)
    assert top5(want)[PHOTOS.index("chelsea")][0] in CATS  # the real weights are loaded


def test_batchnorm_folded_and_flatten_chain_gone(zoo):
    """ResNet-18 kept its 20 BatchNormalization nodes in ONNX: each is folded into its conv;
    the five-node shape chain before the classifier is one flatten."""
    ops = [n.op for n in zoo.graph("resnet18").nodes]
    assert "batchnorm" not in ops and ops.count("conv2d") == 20
    assert ops.count("flatten") == 1 and "reshape" not in ops


def _label(index: int) -> str:
    try:
        from compress.imagenet_labels import imagenet_labels

        return f" ({imagenet_labels()[index]})"
    except Exception:  # the class names come from an optional package
        return ""


WEIGHTS = {"mobilenet_v2": "ImageNet (torchvision)", "resnet18": "random, seed 18",
           "squeezenet1_1": "random, seed 11"}


def figures(zoo: Zoo) -> str:
    """The tables of docs/ONNX.md: max relative difference to ORT per model and backend on
    random input, and MobileNetV2's on the photos with its top-5 against ORT's."""
    lines = ["| model | weights | input | export: opset, mode | numba | numpy |",
             "|---|---|---|---|---:|---:|"]
    for name, spec in SPECS.items():
        x = random_input(name)
        want = zoo.ort(name, x)
        cells = [f"{relative_error(zoo.engine(name, b, x), want):.1e}" for b in BACKENDS]
        lines.append(f"| {name} | {WEIGHTS[name]} | 3 x 3x{spec.side}x{spec.side}, N(0, 1) | "
                     f"{spec.opset}, {spec.training} | {' | '.join(cells)} |")
    lines += ["", "| MobileNetV2 on | ORT top-1 (ImageNet class) | numba: rel. diff, top-5 as "
                  "ORT | numpy: rel. diff, top-5 as ORT |", "|---|---|---|---|"]
    models = {b: engine.load(zoo.pnn("mobilenet_v2"), backend=b) for b in BACKENDS}
    x = models["numpy"].preprocess(photos())
    want = zoo.ort("mobilenet_v2", x)
    got = {b: m.run(x) for b, m in models.items()}
    for i, photo in enumerate(PHOTOS):
        cells = [f"{relative_error(got[b][i:i + 1], want[i:i + 1]):.1e}, "
                 f"{'same' if top5(got[b][i:i + 1]) == top5(want[i:i + 1]) else 'DIFFERENT'}"
                 for b in BACKENDS]
        top1 = top5(want[i:i + 1])[0][0]
        lines.append(f"| {photo} | {top1}{_label(top1)} | {' | '.join(cells)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import argparse
    import tempfile

    from tests.onnx_backend import write_block

    p = argparse.ArgumentParser(description="the figures of docs/ONNX.md")
    p.add_argument("--write", metavar="MD", help="put the table between the markers there")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        table = figures(Zoo(Path(tmp)))
    print(table)
    if args.write:
        write_block(args.write, "models-table", table)
