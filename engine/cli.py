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
from engine import planner
from engine.budget import DEFAULT_MAX_MACS, DEFAULT_MAX_MEMORY, human
from engine.errors import EngineError, InputError
from engine.inputs import as_nchw, read_array
from engine.ops import OPS
from engine.report import describe, render
from engine.runtime import load

DATA = Path(__file__).resolve().parent / "data"
DEMO_MODEL = DATA / "lenet5.pnn"
DEMO_SAMPLES = DATA / "samples.npz"


# ---- infer -----------------------------------------------------------------------------------

def _labels_beside(path: str) -> str | None:
    """MNIST-style naming: '...-images-idx3-ubyte[.gz]' has its labels in '...-labels-idx1-...'."""
    name = os.path.basename(path)
    if "images-idx3" not in name:
        return None
    candidate = os.path.join(os.path.dirname(path), name.replace("images-idx3", "labels-idx1"))
    return candidate if os.path.exists(candidate) else None


def _read_inputs(paths: list[str], labels_path: str | None):
    """Yield (source name, raw images, labels or None) per input file."""
    for path in paths:
        images, labels = read_array(path)
        lp = labels_path or (None if labels is not None else _labels_beside(path))
        if lp:
            labels, _ = read_array(lp)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1)
        yield path, images, labels


def _classify(model, inputs, labels_path, batch_size, top_k):
    """Yield one result dict per image, running the model one batch at a time."""
    softmax = OPS["softmax"].build({"axis": 1}, {}, model.backend)
    names = model.labels
    for source, images, labels in _read_inputs(inputs, labels_path):
        images = as_nchw(images, model.input_shape, source)  # a view: raw values stay raw
        n = images.shape[0]
        if labels is not None and labels.shape[0] != n:
            raise InputError(f"{source}: {n} images but {labels.shape[0]} labels")
        for start in range(0, n, batch_size):
            t0 = time.perf_counter()
            probs = softmax(model.run(model.preprocess(images[start:start + batch_size])))
            seconds = time.perf_counter() - t0
            top = np.argsort(-probs, axis=1, kind="stable")[:, :top_k]
            for i in range(probs.shape[0]):
                item = {"input": source if n == 1 else f"{source}[{start + i}]",
                        "top": [{"index": int(k), "label": _name(names, k),
                                 "prob": float(probs[i, k])} for k in top[i]]}
                if labels is not None:
                    truth = int(labels[start + i])
                    item["true"] = {"index": truth, "label": _name(names, truth)}
                yield item, seconds / probs.shape[0]


def _batch(model, asked: int | None) -> int:
    """--batch, or the default 64 lowered to what fits max_memory; a --batch that does not fit
    is refused before any input is read."""
    fits = model.max_batch()
    if asked is None:
        return min(64, fits)
    if asked > fits:
        raise InputError(f"{model.source}: --batch {asked} needs {human(model.memory(asked))}, "
                         f"over the limit of {human(model.limits.max_memory)} (--max-memory); "
                         f"use --batch {fits} or less")
    return asked


def cmd_infer(args) -> int:
    model_path = args.model or str(DEMO_MODEL)
    t_load = time.perf_counter()
    model = load(model_path, backend=args.backend, threads=args.threads,
                 max_memory=args.max_memory, max_macs=args.max_macs)
    batch = _batch(model, args.batch)
    model.run(np.zeros((1, *model.input_shape), np.float32))  # compile / load Numba's cache
    load_seconds = time.perf_counter() - t_load
    results, images, seconds, correct, known = [], 0, 0.0, 0, 0
    for item, item_seconds in _classify(model, args.inputs or [str(DEMO_SAMPLES)], args.labels,
                                        batch, args.top):
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


def _name(names: list[str], k: int) -> str:
    return names[k] if 0 <= k < len(names) else str(k)


# ---- info ------------------------------------------------------------------------------------

def cmd_info(args) -> int:
    d = describe(args.model, args.backend, args.max_memory, args.max_macs)
    print(json.dumps(d, indent=1) if args.json else render(d))
    return 0


# ---- bench -----------------------------------------------------------------------------------

def cmd_bench(args) -> int:
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

    inf = sub.add_parser("infer", parents=common,
                         help="classify images (no arguments: the bundled demo)")
    inf.add_argument("model", nargs="?", help="a .pnn file (default: the bundled LeNet-5)")
    inf.add_argument("inputs", nargs="*", help=".npy/.npz arrays or IDX[.gz] files "
                     "(default: the bundled Fashion-MNIST samples)")
    inf.add_argument("--top", type=_positive, default=3, help="classes to show (default 3)")
    inf.add_argument("--json", action="store_true", help="print one JSON document")
    inf.add_argument("--backend", **backend)
    inf.add_argument("--batch", type=_positive,
                     help="images per run (default 64, fewer if --max-memory requires)")
    inf.add_argument("--threads", type=_positive, help="Numba threads (default: all cores)")
    inf.add_argument("--labels", help="true labels (IDX or .npy) for the accuracy")
    inf.set_defaults(func=cmd_infer)

    info = sub.add_parser("info", parents=common,
                          help="per-node sizes, multiply-adds, memory and the compression ratio")
    info.add_argument("model")
    info.add_argument("--backend", **backend)
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", parents=common, help="time the model on random input")
    bench.add_argument("model", nargs="?", default=str(DEMO_MODEL))
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
