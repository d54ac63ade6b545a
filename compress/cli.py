"""`python -m compress run|train|prune|quantize|pack|samples`: Deep Compression, whole or by stage.

Stages exchange plain .npz files (see compress/state.py) so a user can stop and inspect
between them. Every stage prints accuracy on the test set; `run` prints a table per stage.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np

from compress import pipeline, state, zoo
from compress.config import DEFAULTS, CompressionConfig
from compress.datasets import DatasetError, load_fashion_mnist
from compress.trainer import params_from_graph
from engine.cli import EXPECTED, _positive, guarded

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
    graph = zoo.build(args.model, seed=args.seed)
    params = _params(args, graph)
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m compress", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, out_help, init=True):
        sp.add_argument("--model", choices=sorted(DEFAULTS), required=True)
        sp.add_argument("--data", default=DEFAULT_DATA,
                        help=f"Fashion-MNIST IDX directory (default {DEFAULT_DATA})")
        sp.add_argument("--out", required=True, help=out_help)
        if init:
            sp.add_argument("--init", help="start from these weights (.npz of a stage)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--train-limit", type=_positive,
                        help="use only the first N training images")
        sp.add_argument("--test-limit", type=_positive, help="use only the first N test images")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        sp.add_argument("--densities", help="fraction kept per weight layer, e.g. 0.5,0.06,...")
        sp.add_argument("--bits", help="codebook bits per weight layer, e.g. 6,6,4,4")
        sp.add_argument("--train-epochs", type=_non_negative)
        sp.add_argument("--retrain-epochs", type=_non_negative, help="epochs per pruning step")
        sp.add_argument("--finetune-epochs", type=_non_negative, help="centroid fine-tuning epochs")
        sp.add_argument("--prune-steps", type=_positive)
        sp.add_argument("--train-lr", type=float, help="learning rate of float training")
        sp.add_argument("--retrain-lr", type=float, help="learning rate of pruning retraining")
        sp.add_argument("--finetune-lr", type=float, help="learning rate of centroid tuning")

    r = sub.add_parser("run", help="the whole pipeline: train -> prune -> share -> .pnn")
    common(r, "the .pnn file to write")
    bias = dict(choices=pipeline.packing.BIAS_DTYPES, default="float16",
                help="how biases are stored (default float16)")
    r.add_argument("--bias-dtype", **bias)
    r.add_argument("--keep", metavar="DIR",
                   help="also save each stage's weights as DIR/<stage>.npz")
    common(sub.add_parser("train", help="train float weights"), "weights .npz to write")
    common(sub.add_parser("prune", help="iterative magnitude pruning with retraining"),
           "masked weights .npz to write")
    common(sub.add_parser("quantize", help="k-means weight sharing + centroid fine-tuning"),
           "shared weights .npz to write")
    pk = sub.add_parser("pack", help="Huffman-code weights into a .pnn")
    common(pk, ".pnn to write")
    pk.add_argument("--bias-dtype", **bias)
    s = sub.add_parser("samples", help="write the demo's sample images (.npz)")
    s.add_argument("--data", default=DEFAULT_DATA)
    s.add_argument("--out", required=True)
    s.add_argument("--count", type=_positive, default=100)
    for sp in sub.choices.values():
        sp.add_argument("--debug", action="store_true", help="print the traceback of a bug")
    for name, fn in (("run", cmd_run), ("train", cmd_train), ("prune", cmd_prune),
                     ("quantize", cmd_quantize), ("pack", cmd_pack), ("samples", cmd_samples)):
        sub.choices[name].set_defaults(func=fn)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args, EXPECTED + (DatasetError, state.StateError, UsageError))
