"""`python -m compress run|train|prune|quantize|pack|samples|import`: Deep Compression, whole or
by stage, and trained models from elsewhere.

Stages exchange plain .npz files (see compress/state.py) so a user can stop and inspect
between them. Every stage prints accuracy on the test set; `run` prints a table per stage.
Each command offers only the flags it uses. `import` turns a PyTorch checkpoint or an .npz of
a known architecture (compress/imagenet_zoo.py), or an ONNX model, into a .pnn.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

import formats
from compress import imagenet_zoo, pipeline, state, zoo
from compress.config import DEFAULTS, CompressionConfig
from compress.datasets import DatasetError, load_fashion_mnist
from compress.importers import _zip
from compress.importers.errors import CheckpointError
from compress.importers.npz import read_npz
from compress.importers.torch_checkpoint import read_torch_checkpoint
from compress.importers.torch_pickle import MAX_BYTES
from compress.trainer import params_from_graph
from engine.cli import EXPECTED, _positive, guarded, size_arg

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist/"


class UsageError(ValueError):
    """An option value the command cannot use; the message names the flag."""


def _non_negative(text: str) -> int:
    return 0 if text.strip() == "0" else _positive(text)


def _config(args) -> CompressionConfig:
    cfg = copy.deepcopy(DEFAULTS[args.model])
    names = list(cfg.densities)
    if getattr(args, "densities", None):
        values = _floats(args.densities, len(names), "--densities")
        if not all(0.0 <= v <= 1.0 for v in values):
            raise UsageError(f"--densities: each must be in 0..1, got {args.densities!r}")
        cfg.densities = dict(zip(names, values, strict=True))
    if getattr(args, "bits", None):
        values = [int(v) for v in _floats(args.bits, len(names), "--bits")]
        if not all(1 <= v <= 16 for v in values):
            raise UsageError(f"--bits: each must be in 1..16, got {args.bits!r}")
        cfg.bits = dict(zip(names, values, strict=True))
    for stage in ("train", "retrain", "finetune"):
        epochs = getattr(args, f"{stage}_epochs", None)
        if epochs is not None:
            getattr(cfg, stage).epochs = epochs
    for stage in ("train", "retrain", "finetune"):
        lr = getattr(args, f"{stage}_lr", None)
        if lr is not None:
            getattr(cfg, stage).lr = lr
    if getattr(args, "prune_steps", None):
        cfg.prune_steps = args.prune_steps
    return cfg


def _floats(text: str, n: int, flag: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag}: expected {n} comma-separated numbers, got {text!r}") from None
    if len(values) != n:
        raise UsageError(f"{flag}: expected {n} values (one per weight layer), got {len(values)}")
    return values


def _data(args):
    data = load_fashion_mnist(args.data)
    if args.train_limit:
        n = args.train_limit
        data.x_train, data.y_train = data.x_train[:n], data.y_train[:n]
    if args.test_limit:
        data.x_test, data.y_test = data.x_test[:args.test_limit], data.y_test[:args.test_limit]
    return data


def _params(args, graph):
    if args.init:
        return state.load(args.init, graph)
    return params_from_graph(graph)


def cmd_run(args) -> int:
    graph = zoo.build(args.model, seed=args.seed)
    data = _data(args)
    params = state.load(args.init, graph) if args.init else None
    pipeline.run(graph, data, _config(args), args.out, params=params, seed=args.seed,
                 progress=not args.quiet, keep=args.keep, bias_dtype=args.bias_dtype)
    return 0


def _stage(stage_fn, label):
    """A single-stage command: weights in (--init, or the model's initial ones), weights out."""
    def command(args) -> int:
        graph = zoo.build(args.model, seed=args.seed)
        data = _data(args)
        params = stage_fn(graph, _params(args, graph), data, _config(args), seed=args.seed,
                          progress=not args.quiet)
        state.save(args.out, params)
        print(pipeline.format_table([pipeline.summarize(label, graph, params, data)]))
        return 0
    return command


cmd_train = _stage(pipeline.train_stage, "float")
cmd_prune = _stage(pipeline.prune_stage, "pruned")
cmd_quantize = _stage(pipeline.quantize_stage, "shared")


def cmd_pack(args) -> int:
    graph = zoo.build(args.model)  # the structure: every weight comes from --init
    params = state.load(args.init, graph)
    size = pipeline.packing.pack(graph, params, args.out, args.bias_dtype)
    total = sum(np.size(v) for v in graph.tensors.values())
    print(f"wrote {args.out}: {size:,} bytes, {4 * total / size:.1f}x smaller than float32")
    return 0


def cmd_samples(args) -> int:
    """The bundled demo inputs: the first N test images with their labels."""
    data = load_fashion_mnist(args.data)
    x, y = data.x_test[:args.count], data.y_test[:args.count].astype(np.uint8)
    state.save_npz(args.out, {"x": x, "y": y}, compressed=True)
    print(f"wrote {args.out}: {len(y)} images")
    return 0


# ---- import ------------------------------------------------------------------------------------

IMPORT_DTYPES = ("float32", "float16")


def _source_kind(path: str) -> str:
    """"onnx" (by extension), "torch" (torch.save's zip or legacy pickle) or "npz", by content."""
    if path.lower().endswith(".onnx"):
        return "onnx"
    with open(path, "rb") as f:
        head = f.read(512)
        if head.startswith(b"PK\x03\x04"):
            f.seek(0)
            try:
                names = [i.filename for i in _zip.open_zip(f, path).infolist()]
            except _zip.READ_ERRORS as e:
                raise CheckpointError(f"{path}: damaged zip archive ({e})") from None
            if any(n.endswith("/data.pkl") and n.count("/") == 1 for n in names):
                return "torch"
            if names and all(n.endswith(".npy") for n in names):
                return "npz"
            raise CheckpointError(f"{path}: a zip archive, but neither a torch.save checkpoint "
                                  f"nor an .npz of arrays")
    if head[:1] == b"\x80" or head[257:262] == b"ustar":  # torch.save before PyTorch 1.6
        return "torch"
    raise CheckpointError(f"{path}: not a PyTorch checkpoint, an .npz or an .onnx file")


def _import_onnx(path: str):
    try:
        from compress.importers.onnx_import import OnnxImportError, import_onnx
    except ImportError as e:
        raise UsageError(f"{path}: ONNX import is not available ({e})") from None
    try:
        return import_onnx(path)
    except ImportError as e:  # the onnx package: an optional dependency
        raise UsageError(f"{path}: {e}") from None
    except OnnxImportError as e:
        raise CheckpointError(str(e)) from None


def stored(graph, dtype: str):
    """The graph with its weights stored as `dtype`. float16 halves weights and keeps 1-d
    tensors (biases, with BatchNorm's shift folded in) float32: they are 0.5% of MobileNetV2's
    parameters, and a shift rounded to float16 moves every output of its channel."""
    if dtype not in IMPORT_DTYPES:
        raise UsageError(f"--dtype: one of {', '.join(IMPORT_DTYPES)}, got {dtype!r}")
    graph.tensors = {k: np.ascontiguousarray(v, dtype if np.ndim(v) > 1 else "float32")
                     for k, v in graph.tensors.items()}
    return graph


IMAGENET_ARCHS = ("mobilenet_v2", "resnet18", "squeezenet1_1")


def imagenet_shaped(graph, src: str) -> bool:
    """3 input channels and 1,000 classes: a zoo architecture trained on ImageNet."""
    from engine.planner import shapes

    return graph.input_shape[0] == 3 and shapes(graph, src)[graph.output_name][-1] == 1000


def as_imagenet_classifier(graph, src: str) -> None:
    """torchvision's ImageNet conventions: class names in its order, images resized to 256 on
    the shorter side, centre-cropped, scaled to 0..1 and normalised with ImageNet's mean/std."""
    from compress.imagenet_labels import LabelsUnavailable, imagenet_labels
    from engine.ir import Preprocess

    if not imagenet_shaped(graph, src):
        raise UsageError(f"{src}: --imagenet needs 3 input channels and 1,000 classes; the "
                         f"model takes {graph.input_shape}")
    try:
        graph.labels = imagenet_labels()
    except LabelsUnavailable as e:
        raise UsageError(str(e)) from None
    graph.preprocess = Preprocess(scale=1 / 255, mean=[0.485, 0.456, 0.406],
                                  std=[0.229, 0.224, 0.225],
                                  resize=round(graph.input_shape[1] * 256 / 224))


def cmd_import(args) -> int:
    src = args.src
    kind = _source_kind(src)
    if kind == "onnx":
        if args.arch:
            raise UsageError("--arch: an ONNX model carries its own graph; leave --arch out")
        graph = _import_onnx(src)
    else:
        read = read_torch_checkpoint if kind == "torch" else read_npz
        tensors = read(src, max_bytes=args.max_bytes)
        if not args.arch:
            guess = imagenet_zoo.guess_arch(tensors)
            hint = f"; the names are {guess}'s" if guess else ""
            raise UsageError(f"{src}: --arch is required for a "
                             f"{'PyTorch checkpoint' if kind == 'torch' else '.npz'} (one of "
                             f"{', '.join(imagenet_zoo.ARCHS)}){hint}")
        try:
            graph = imagenet_zoo.build(args.arch, tensors, source=src)
        except imagenet_zoo.WeightsError:
            guess = imagenet_zoo.guess_arch(tensors)
            if guess and guess != args.arch:
                raise UsageError(f"{src}: the weights are {guess}'s, not {args.arch}'s: use "
                                 f"--arch {guess}") from None
            raise
    if args.imagenet or (args.arch in IMAGENET_ARCHS and imagenet_shaped(graph, src)):
        as_imagenet_classifier(graph, src)
    graph = stored(graph, args.dtype)
    size = formats.write(args.out, graph.to_metadata(), graph.tensors)
    params = sum(int(np.size(v)) for v in graph.tensors.values())
    print(f"wrote {args.out}: {size:,} bytes, {len(graph.nodes)} nodes, {params:,} parameters "
          f"({args.arch or 'ONNX'} from {src}, {args.dtype} weights)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compress", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    # Flag groups; each command takes only the groups it uses (`--help` lists them).
    def model(sp, out_help, init="start from these weights (.npz of a stage, or a .pnn)"):
        sp.add_argument("--model", choices=sorted(DEFAULTS), required=True)
        sp.add_argument("--out", required=True, help=out_help)
        sp.add_argument("--init", help=init, required=init.startswith("(required)"))

    def data(sp):
        sp.add_argument("--data", default=DEFAULT_DATA,
                        help=f"Fashion-MNIST IDX directory (default {DEFAULT_DATA})")
        sp.add_argument("--train-limit", type=_positive,
                        help="use only the first N training images")
        sp.add_argument("--test-limit", type=_positive, help="use only the first N test images")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--quiet", action="store_true", help="no progress bars")

    def training(sp):
        sp.add_argument("--train-epochs", type=_non_negative)
        sp.add_argument("--train-lr", type=float, help="learning rate of float training")

    def pruning(sp):
        sp.add_argument("--densities", help="fraction kept per weight layer, e.g. 0.5,0.06,...")
        sp.add_argument("--prune-steps", type=_positive)
        sp.add_argument("--retrain-epochs", type=_non_negative, help="epochs per pruning step")
        sp.add_argument("--retrain-lr", type=float, help="learning rate of pruning retraining")

    def sharing(sp):
        sp.add_argument("--bits", help="codebook bits per weight layer, e.g. 6,6,4,4")
        sp.add_argument("--finetune-epochs", type=_non_negative, help="centroid fine-tuning epochs")
        sp.add_argument("--finetune-lr", type=float, help="learning rate of centroid tuning")

    bias = dict(choices=pipeline.packing.BIAS_DTYPES, default="float16",
                help="how biases are stored (default float16)")

    r = sub.add_parser("run", help="the whole pipeline: train -> prune -> share -> .pnn")
    model(r, "the .pnn file to write")
    for group in (data, training, pruning, sharing):
        group(r)
    r.add_argument("--bias-dtype", **bias)
    r.add_argument("--keep", metavar="DIR",
                   help="also save each stage's weights as DIR/<stage>.npz")
    for name, help_, out, group in (
            ("train", "train float weights", "weights .npz to write", training),
            ("prune", "iterative magnitude pruning with retraining",
             "masked weights .npz to write", pruning),
            ("quantize", "k-means weight sharing + centroid fine-tuning",
             "shared weights .npz to write", sharing)):
        sp = sub.add_parser(name, help=help_)
        model(sp, out)
        data(sp)
        group(sp)
    pk = sub.add_parser("pack", help="Huffman-code weights into a .pnn")
    model(pk, ".pnn to write", init="(required) the weights to pack: a stage's .npz or a .pnn")
    pk.add_argument("--bias-dtype", **bias)
    s = sub.add_parser("samples", help="write the demo's sample images (.npz)")
    s.add_argument("--data", default=DEFAULT_DATA)
    s.add_argument("--out", required=True)
    s.add_argument("--count", type=_positive, default=100)
    im = sub.add_parser("import", help="a PyTorch checkpoint, .npz or ONNX model -> .pnn")
    im.add_argument("src", metavar="SRC", help="a .pth/.pt (torch.save), .npz or .onnx file")
    im.add_argument("--out", required=True, help="the .pnn file to write")
    im.add_argument("--arch", choices=imagenet_zoo.ARCHS,
                    help="the architecture of a .pth/.npz's weights (torchvision's names)")
    im.add_argument("--imagenet", action="store_true",
                    help="an ImageNet classifier: store the 1,000 class names and torchvision's "
                         "preprocessing (resize 256, centre crop, mean/std); the default for "
                         "the zoo's ImageNet architectures")
    im.add_argument("--dtype", choices=IMPORT_DTYPES, default="float32",
                    help="how weights are stored (float16: half the size; biases stay float32)")
    im.add_argument("--max-bytes", type=size_arg, default=MAX_BYTES,
                    help=f"most tensor bytes read from SRC (default {MAX_BYTES >> 30} GiB)")
    for sp in sub.choices.values():
        sp.add_argument("--debug", action="store_true", help="print the traceback of a bug")
    for name, fn in (("run", cmd_run), ("train", cmd_train), ("prune", cmd_prune),
                     ("quantize", cmd_quantize), ("pack", cmd_pack), ("samples", cmd_samples),
                     ("import", cmd_import)):
        sub.choices[name].set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args, EXPECTED + (DatasetError, state.StateError, UsageError,
                                                CheckpointError, imagenet_zoo.WeightsError))
