"""`python -m engine infer|info|bench`: classify images, describe a model, time a model.

Every expected failure (a bad file or input, a model over the limits, missing Numba) becomes
one line on stderr naming the file, the problem, the figure and the limit, with exit status 1.
Anything else is a bug: one line asking to report it (exit 2), the traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from pathlib import Path

import numpy as np

import formats
from engine import classify, planner
from engine.budget import DEFAULT_MAX_MACS, DEFAULT_MAX_MEMORY, human
from engine.errors import EngineError, InputError, ModelError, SettingError
from engine.images import is_image_name
from engine.inputs import ARRAY_KINDS, IMAGE_KINDS, describe_kind, read_array, sniff
from engine.ir import Preprocess
from engine.report import describe, render
from engine.runtime import load

DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA / "lenet5.pnn"
DEMO_SAMPLES = DATA / "samples.npz"
INPUT_KINDS = IMAGE_KINDS | ARRAY_KINDS


# ---- which file is the model ------------------------------------------------------------------

def _model_and_inputs(args) -> tuple[str, list[str]]:
    """The model path and the input paths of `infer`. The model is -m MODEL, or (the form
    before -m, kept) a first positional that is a .pnn or no known kind of input; else the
    bundled demo. No inputs: the bundled samples."""
    inputs = list(args.inputs)
    model = args.model
    if model is None and inputs and _is_model_path(inputs[0]):
        model = inputs.pop(0)
    model = model or str(DEMO_MODEL)
    _check_model_path(model)
    for path in inputs:
        if sniff(path) == "pnn":
            raise InputError(f"{path}: a model, not an input: pass one model, with -m MODEL; "
                             f"inputs are images or arrays")
    return model, inputs or [str(DEMO_SAMPLES)]


def _is_model_path(path: str) -> bool:
    """A .pnn by its bytes, or a file no input reader knows (a damaged model: let the model
    reader say what is wrong) that is not named like an input."""
    kind = sniff(path)
    if kind is not None:
        return kind == "pnn"
    ext = os.path.splitext(path)[1].lower()
    return ext not in (".npy", ".npz", ".gz", ".idx") and not is_image_name(path)


def _check_model_path(path: str) -> None:
    """A model argument that is recognisably something else: say what it looks like."""
    kind = sniff(path)
    if kind is None or kind == "pnn":
        return  # the .pnn reader checks the rest
    if kind in ("onnx", "torch"):
        hint = f"; convert it first: python -m compress import {path} --out MODEL.pnn"
    else:
        hint = "; pass the model with -m MODEL, inputs after it" if kind in INPUT_KINDS else ""
    raise ModelError(f"{path}: not a .pnn model (it looks like {describe_kind(kind)}){hint}")


# ---- infer -----------------------------------------------------------------------------------

def _labels_beside(path: str) -> str | None:
    """MNIST-style naming: '...-images-idx3-ubyte[.gz]' has its labels in '...-labels-idx1-...'."""
    name = os.path.basename(path)
    if "images-idx3" not in name:
        return None
    candidate = os.path.join(os.path.dirname(path), name.replace("images-idx3", "labels-idx1"))
    return candidate if os.path.exists(candidate) else None


def _read_inputs(model, paths: list[str], labels_path: str | None):
    """Yield one classify.Batch per input file, with its true labels where known."""
    for path in paths:
        batch = classify.read_input(model, path)
        labels = batch.labels
        lp = labels_path or (None if labels is not None else _labels_beside(path))
        if lp:
            labels, _ = read_array(lp)
            labels = np.asarray(labels).reshape(-1)
        n = batch.images.shape[0]
        if labels is not None and labels.shape[0] != n:
            raise InputError(f"{path}: {n} images but {labels.shape[0]} labels")
        yield batch._replace(labels=labels)


def _classify(model, args, size):
    """Yield (result dict, seconds) per image, running the model `size` images at a time."""
    k = args.top or classify.DEFAULT_TOP
    for batch in _read_inputs(model, args.inputs, args.labels):
        n = batch.images.shape[0]
        t0 = time.perf_counter()
        for i, tops in classify.classify_batch(model, batch, k, size=size,
                                               input_range=args.input_range):
            seconds = time.perf_counter() - t0
            item = {"input": batch.source if n == 1 else f"{batch.source}[{i}]",
                    "top": [{"index": t.index, "label": t.label, "prob": t.prob} for t in tops]}
            if batch.labels is not None:
                truth = int(batch.labels[i])
                item["true"] = {"index": truth, "label": classify.label_of(model.labels, truth)}
            yield item, seconds
            t0 = time.perf_counter()


def _batch(model, asked: int | None) -> int:
    """--batch, or the default 64 lowered to what fits max_memory; a --batch that does not fit
    is refused before any input is read."""
    fits = model.max_batch()
    if asked is None:
        return min(classify.DEFAULT_BATCH, fits)
    if asked > fits:
        raise InputError(f"{model.source}: --batch {asked} needs {human(model.memory(asked))}, "
                         f"over the limit of {human(model.limits.max_memory)} (--max-memory); "
                         f"use --batch {fits} or less")
    return asked


def cmd_infer(args) -> int:
    model_path, args.inputs = _model_and_inputs(args)
    t_load = time.perf_counter()
    model = load(model_path, backend=args.backend, threads=args.threads,
                 max_memory=args.max_memory, max_macs=args.max_macs)
    size = _batch(model, args.batch)
    model.run(np.zeros((1, *model.input_shape), np.float32))  # compile / load Numba's cache
    load_seconds = time.perf_counter() - t_load
    results, images, seconds, correct, known = [], 0, 0.0, 0, 0
    for item, item_seconds in _classify(model, args, size):
        images += 1
        seconds += item_seconds
        if "true" in item:
            known += 1
            correct += int(item["top"][0]["index"] == item["true"]["index"])
        if args.json:
            results.append(item)
        else:  # stream: a 10,000-image file shows answers as they come
            tops = "  ".join(f"{t['label']} {t['prob']:.3f}" for t in item["top"])
            truth = f"  (true: {item['true']['label']})" if "true" in item else ""
            print(f"{item['input']}: {tops}{truth}")
    accuracy = correct / known if known else None
    if args.json:
        json.dump({"model": model_path, "backend": model.backend, "seconds": seconds,
                   "load_seconds": load_seconds, "images": images, "accuracy": accuracy,
                   "results": results}, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if accuracy is not None:
        print(f"accuracy: {correct}/{known} = {100 * accuracy:.2f}%")
    print(f"backend: {model.backend}; {images} images in {seconds:.4f} s "
          f"({1e3 * seconds / max(images, 1):.3f} ms/image; load {load_seconds:.3f} s)")
    return 0


# ---- info ------------------------------------------------------------------------------------

def _one_model(args) -> str:
    """The model of info / bench: -m MODEL or the positional (not both), else the demo."""
    if args.model and args.model_pos and args.model != args.model_pos:
        raise SettingError(f"two models given ({args.model_pos} and -m {args.model}): pass one")
    path = args.model or args.model_pos or str(DEMO_MODEL)
    _check_model_path(path)
    return path


def cmd_info(args) -> int:
    path = _one_model(args)
    if args.path:
        if not os.path.isfile(path):
            raise formats.FormatError("no such file", path=path)
        print(os.path.abspath(path))
        return 0
    d = describe(path, args.backend, args.max_memory, args.max_macs)
    print(json.dumps(d, indent=1) if args.json else render(d))
    return 0


# ---- bench -----------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    args.model = _one_model(args)
    model = load(args.model, backend=args.backend, threads=args.threads,
                 max_memory=args.max_memory, max_macs=args.max_macs)
    _batch(model, args.batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, *model.input_shape)).astype(np.float32)
    model.run(x)  # warm-up: compiles (or loads the Numba cache) before timing
    times = []
    deadline = time.perf_counter() + args.seconds
    while len(times) < args.min_runs or (time.perf_counter() < deadline and len(times) < 10000):
        t0 = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - t0)
    t = np.array(times)
    d = {"model": args.model, "backend": model.backend, "batch": args.batch, "runs": len(t),
         "median_ms": 1e3 * float(np.median(t)), "min_ms": 1e3 * float(t.min()),
         "per_image_ms": 1e3 * float(np.median(t)) / args.batch,
         "layers": [{"name": s.node.name, "kernel": s.kernel.name} for s in model.steps]}
    if args.json:
        print(json.dumps(d, indent=1))
    else:
        print(f"{args.model}: backend {d['backend']}, batch {d['batch']}, {d['runs']} runs: "
              f"median {d['median_ms']:.3f} ms, min {d['min_ms']:.3f} ms, "
              f"{d['per_image_ms']:.3f} ms/image")
        print("kernels: " + ", ".join(f"{r['name']}={r['kernel']}" for r in d["layers"]))
    return 0


# ---- entry point -----------------------------------------------------------------------------

def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def size_arg(text: str) -> int:
    """'1073741824', '512M', '2G', '1.5g' -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m or float(m.group(1)) * _UNITS[m.group(2)] < 1:
        raise argparse.ArgumentTypeError(f"expected a size such as 512M or 2G, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def count_arg(text: str) -> int:
    """'20000000000', '20e9', '2G' -> a count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]?)\s*", text.lower())
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
    if not m or float(m.group(1)) * scale[m.group(2)] < 1:
        raise argparse.ArgumentTypeError(f"expected a count such as 20e9 or 20G, got {text!r}")
    return int(float(m.group(1)) * scale[m.group(2)])


def range_arg(text: str) -> tuple[float, float]:
    """'0..1', '-1..1', '0..255' -> (lo, hi) with lo < hi."""
    lo, sep, hi = text.partition("..")
    try:
        return Preprocess.check_range((lo, hi)) if sep else Preprocess.check_range(None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO..HI such as 0..1 or 0..255, got "
                                         f"{text!r}") from None


def limit_options() -> argparse.ArgumentParser:
    """--max-memory / --max-macs / --debug, shared by every command (and compress's)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--max-memory", type=size_arg, metavar="SIZE",
                   help=f"bytes a model may use for weights, activations and workspace "
                        f"(default {human(DEFAULT_MAX_MEMORY)}; e.g. 512M, 4G)")
    p.add_argument("--max-macs", type=count_arg, metavar="N",
                   help=f"multiply-adds per image a model may cost (default "
                        f"{DEFAULT_MAX_MACS:.0e}; e.g. 50G)")
    p.add_argument("--debug", action="store_true", help="print the traceback of a bug")
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = [limit_options()]
    backend = dict(choices=planner.BACKENDS, default="auto",
                   help="auto: Numba when installed, else NumPy/SciPy (default: auto)")

    inf = sub.add_parser("infer", parents=common, help="classify images (no arguments: the demo)",
                         description="Classify images with a .pnn model: one line per image with "
                         "its most likely classes and their probabilities.")
    inf.add_argument("-m", "--model", metavar="MODEL",
                     help="the .pnn model (default: the bundled Fashion-MNIST LeNet-5)")
    inf.add_argument("inputs", nargs="*", metavar="INPUT",
                     help="image files (JPEG, PNG, BMP, GIF, WebP, PGM/PPM; needs Pillow), "
                     ".npy/.npz arrays or IDX[.gz] files (default: the bundled Fashion-MNIST "
                     "samples)")
    inf.add_argument("--top", type=_positive, metavar="K",
                     help=f"classes shown per image (default {classify.DEFAULT_TOP}, or all "
                     f"when the model has fewer)")
    inf.add_argument("--input-range", type=range_arg, metavar="LO..HI",
                     help="what array values span, e.g. 0..1 (default: integers are raw "
                     "pixels; floats in 0..1 are refused as ambiguous)")
    inf.add_argument("--json", action="store_true", help="print one JSON document")
    inf.add_argument("--backend", **backend)
    inf.add_argument("--batch", type=_positive,
                     help="images per run (default 64, fewer if --max-memory requires)")
    inf.add_argument("--threads", type=_positive, help="Numba threads (default: all cores)")
    inf.add_argument("--labels", help="true labels (IDX or .npy) for the accuracy")
    inf.set_defaults(func=cmd_infer)

    info = sub.add_parser("info", parents=common,
                          help="the graph: per-node sizes, multiply-adds, memory, compression",
                          description="Describe a .pnn model: its input, output, labels and "
                          "preprocessing, one row per node, totals and what a run needs.")
    info.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as -m")
    info.add_argument("-m", "--model", metavar="MODEL",
                      help="the .pnn model (default: the bundled demo)")
    info.add_argument("--path", action="store_true",
                      help="only print the model file's absolute path (the bundled demo's "
                      "by default)")
    info.add_argument("--backend", **backend)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", parents=common, help="time the model on random input")
    bench.add_argument("model_pos", nargs="?", metavar="MODEL", help="same as -m")
    bench.add_argument("-m", "--model", metavar="MODEL",
                       help="the .pnn model (default: the bundled demo)")
    bench.add_argument("--batch", type=_positive, default=1)
    bench.add_argument("--backend", **backend)
    bench.add_argument("--threads", type=_positive)
    bench.add_argument("--seconds", type=float, default=2.0, help="time budget (default 2)")
    bench.add_argument("--min-runs", type=_positive, default=5)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
    return p


EXPECTED = (formats.FormatError, EngineError)


def guarded(command, args, expected: tuple = EXPECTED) -> int:
    """Run a CLI command: an expected error is one line on stderr and exit 1; a bug is one line
    asking for a report and exit 2, with the traceback only under --debug."""
    try:
        return command(args)
    except BrokenPipeError:  # `... | head`: not an error
        return 0
    except expected as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a path that cannot be read or written: the message names it
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("error: this machine ran out of memory below --max-memory; lower --batch or "
              "--max-memory", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: never shown as a raw traceback unless asked for
        if getattr(args, "debug", False):
            traceback.print_exc()
        hint = "" if getattr(args, "debug", False) else "; add --debug for the traceback"
        print(f"error: internal error ({type(e).__name__}: {_one_line(e)[:200]}): a bug in "
              f"pocketnn, please report it with the command you ran{hint}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)
