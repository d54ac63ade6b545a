"""`python -m engine infer|info|bench`: classify images, describe a model, time a model.

Every expected failure (bad file, bad input, missing Numba) becomes one line on stderr and a
non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import formats
from engine import planner
from engine.inputs import InputError, as_nchw, read_array
from engine.ops import OPS
from engine.runtime import graph_of, load

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


def cmd_infer(args) -> int:
    model_path = args.model or str(DEMO_MODEL)
    t_load = time.perf_counter()
    model = load(model_path, backend=args.backend, threads=args.threads)
    model.run(np.zeros((1, *model.input_shape), np.float32))  # compile / load Numba's cache
    load_seconds = time.perf_counter() - t_load
    results, images, seconds, correct, known = [], 0, 0.0, 0, 0
    for item, item_seconds in _classify(model, args.inputs or [str(DEMO_SAMPLES)], args.labels,
                                        args.batch, args.top):
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

def describe(path: str) -> dict:
    """Per-layer sizes of a .pnn file: the data behind `info`."""
    with formats.open(path) as f:
        meta, infos = f.metadata, {name: f.info(name) for name in f.tensor_names}
        file_size = f.file_size
    nodes = graph_of(meta, dict.fromkeys(infos), path).nodes  # no tensor decoded
    rows, total_params, total_nnz, total_bytes = [], 0, 0, 0
    for node in nodes:
        if not node.params:
            continue
        tinfo = [infos[name] for name in node.params.values()]
        params = sum(int(np.prod(t.shape, dtype=np.int64)) for t in tinfo)
        nnz = sum(t.nnz for t in tinfo)
        nbytes = sum(t.nbytes for t in tinfo)
        weight = infos.get(node.params.get("weight", ""), tinfo[0])
        rows.append({"name": node.name, "op": node.op, "weight_shape": list(weight.shape),
                     "params": params, "nonzeros": nnz, "bits": weight.bits,
                     "encoding": weight.encoding, "bytes": nbytes})
        total_params += params
        total_nnz += nnz
        total_bytes += nbytes
    return {"model": path, "file_bytes": file_size, "params": total_params,
            "nonzeros": total_nnz, "tensor_bytes": total_bytes,
            "float32_bytes": 4 * total_params,
            "ratio": 4 * total_params / file_size if file_size else None,
            "layers": rows}


def cmd_info(args) -> int:
    d = describe(args.model)
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    head = f"{'layer':<10} {'op':<8} {'weight shape':<16} {'params':>9} {'nonzeros':>9} " \
           f"{'density':>8} {'bits':>5} {'bytes':>8}"
    print(head)
    print("-" * len(head))
    for r in d["layers"]:
        shape = "x".join(map(str, r["weight_shape"]))
        bits = "-" if r["bits"] is None else str(r["bits"])
        print(f"{r['name']:<10} {r['op']:<8} {shape:<16} {r['params']:>9,} {r['nonzeros']:>9,} "
              f"{r['nonzeros'] / max(r['params'], 1):>8.2%} {bits:>5} {r['bytes']:>8,}")
    print("-" * len(head))
    print(f"{'total':<36} {d['params']:>9,} {d['nonzeros']:>9,} "
          f"{d['nonzeros'] / max(d['params'], 1):>8.2%} {'':>5} {d['tensor_bytes']:>8,}")
    print(f"file: {d['file_bytes']:,} bytes; float32 weights: {d['float32_bytes']:,} bytes; "
          f"compression ratio {d['ratio']:.1f}x")
    return 0


# ---- bench -----------------------------------------------------------------------------------

def cmd_bench(args) -> int:
    model = load(args.model, backend=args.backend, threads=args.threads)
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
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    backend = dict(choices=planner.BACKENDS, default="auto",
                   help="auto: Numba when installed, else NumPy/SciPy (default: auto)")

    inf = sub.add_parser("infer", help="classify images (no arguments: the bundled demo)")
    inf.add_argument("model", nargs="?", help="a .pnn file (default: the bundled LeNet-5)")
    inf.add_argument("inputs", nargs="*", help=".npy/.npz arrays or IDX[.gz] files "
                     "(default: the bundled Fashion-MNIST samples)")
    inf.add_argument("--top", type=_positive, default=3, help="classes to show (default 3)")
    inf.add_argument("--json", action="store_true", help="print one JSON document")
    inf.add_argument("--backend", **backend)
    inf.add_argument("--batch", type=_positive, default=64, help="images per run (default 64)")
    inf.add_argument("--threads", type=_positive, help="Numba threads (default: all cores)")
    inf.add_argument("--labels", help="true labels (IDX or .npy) for the accuracy")
    inf.set_defaults(func=cmd_infer)

    info = sub.add_parser("info", help="per-layer sizes and the compression ratio")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    bench = sub.add_parser("bench", help="time the model on random input")
    bench.add_argument("model", nargs="?", default=str(DEMO_MODEL))
    bench.add_argument("--batch", type=_positive, default=1)
    bench.add_argument("--backend", **backend)
    bench.add_argument("--threads", type=_positive)
    bench.add_argument("--seconds", type=float, default=2.0, help="time budget (default 2)")
    bench.add_argument("--min-runs", type=_positive, default=5)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `... | head`: not an error
        return 0
    except (ValueError, OSError) as e:
        # FormatError, ModelError and InputError are ValueErrors that name the file and the
        # problem already; OSError covers unreadable paths.
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
