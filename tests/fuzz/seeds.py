"""(Re)create the fuzzers' seed files: `python -m tests.fuzz.seeds [--out tests/fuzz/corpus]`.

Seeds are named `seed-*` so they are told apart from what the fuzzers found; each is under
64 KiB. The `pnn` and `model` targets share the .pnn seeds (the bundled demo, small models in
every tensor encoding and all three codebook modes, plain and zlib metadata); `pnn` also gets
files that are valid containers but no model. The `input` target's files start with a selector
byte (harness.SUFFIXES[byte % 4] is the suffix the bytes are saved under), then the file.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import struct
import tempfile

import numpy as np

import formats
from engine.cli import DEMO_MODEL
from engine.ir import Graph, Node, Preprocess
from tests.fuzz import pnnlayout
from tests.fuzz.mutators import SUFFIXES

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
MAX_SEED_BYTES = 64 << 10


def codebook(shape, density, bits, mode="shared", seed=0) -> formats.CodebookTensor:
    """A CodebookTensor with random codes at a random `density` of positions."""
    rng = np.random.default_rng(seed)
    k = min(1 << bits, 1 + rng.integers(1, 1 << min(bits, 6)))
    codes = rng.integers(0, k, size=shape)
    codes[rng.random(shape) >= density] = -1
    if mode == "per_channel":
        book = rng.standard_normal((shape[0], k)).astype(np.float32)
    else:
        book = np.linspace(-1, 1, k, dtype=np.float32)
    scale = rng.random(shape[0]).astype(np.float32) + 0.5 if mode == "scaled" else None
    return formats.from_dense_codes(codes, book, bits, scale)


def dense(shape, dtype=np.float32, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * 0.3).astype(dtype)


def chain(input_shape, layers, tensors, labels=None, mean=0.0, std=1.0) -> Graph:
    """A chain graph; layers are (op, attrs, params role -> tensor name)."""
    nodes, prev = [], "input"
    for i, (op, attrs, params) in enumerate(layers):
        out = "logits" if i == len(layers) - 1 else f"v{i}"
        nodes.append(Node(op, f"n{i}", [prev], [out], attrs, params))
        prev = out
    c = input_shape[0]
    return Graph(nodes, "input", tuple(input_shape), prev, tensors, labels or [],
                 Preprocess(mean=[mean] * c, std=[std] * c))


def tiny_linear(weight) -> Graph:
    """(1, 2, 2) -> flatten -> linear (3, 4) -> softmax."""
    return chain((1, 2, 2), [("flatten", {"start_dim": 1}, {}),
                             ("linear", {}, {"weight": "w", "bias": "b"}),
                             ("softmax", {"axis": 1}, {})],
                 {"w": weight, "b": dense((3,), np.float16, 1)}, ["a", "b", "c"])


def tiny_cnn(conv_w, fc_w, bias_dtype=np.float16) -> Graph:
    """(2, 6, 6) -> conv 3x3 pad 1 -> relu -> maxpool 2 -> flatten -> linear -> softmax."""
    return chain((2, 6, 6), [
        ("conv2d", {"stride": [1, 1], "padding": [1, 1]}, {"weight": "conv.w", "bias": "conv.b"}),
        ("relu", {}, {}),
        ("maxpool2d", {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0]}, {}),
        ("flatten", {"start_dim": 1}, {}),
        ("linear", {}, {"weight": "fc.w", "bias": "fc.b"}),
        ("softmax", {}, {}),
    ], {"conv.w": conv_w, "conv.b": dense((4,), bias_dtype, 2), "fc.w": fc_w,
        "fc.b": dense((5,), bias_dtype, 3)}, [str(i) for i in range(5)], 0.5, 0.25)


def wide_linear(bits=4, cols=70_000) -> Graph:
    """A (1, 1, cols) linear model: rows over 65,536 columns store int32 column indices."""
    return chain((1, 1, cols), [("flatten", {}, {}),
                                ("linear", {}, {"weight": "w"})],
                 {"w": codebook((2, cols), 0.0005, bits, seed=4)})


def model_graphs() -> dict[str, Graph]:
    return {
        "linear-f32": tiny_linear(dense((3, 4))),
        "linear-f16": tiny_linear(dense((3, 4), np.float16)),
        "linear-shared": tiny_linear(codebook((3, 4), 0.6, 2)),
        "cnn-shared": tiny_cnn(codebook((4, 2, 3, 3), 0.5, 4), codebook((5, 36), 0.3, 3)),
        "cnn-per_channel": tiny_cnn(codebook((4, 2, 3, 3), 0.7, 3, "per_channel", 1),
                                    codebook((5, 36), 0.4, 5, "per_channel", 2)),
        "cnn-scaled": tiny_cnn(codebook((4, 2, 3, 3), 0.5, 6, "scaled", 3),
                               codebook((5, 36), 0.2, 2, "scaled", 4), np.float32),
        "cnn-16bit": tiny_cnn(codebook((4, 2, 3, 3), 1.0, 9, "scaled", 5),
                              codebook((5, 36), 0.5, 12, "per_channel", 6)),
        "cnn-dense-conv": tiny_cnn(dense((4, 2, 3, 3)), codebook((5, 36), 0.0, 1)),
        "wide-int32-cols": wide_linear(),
    }


def container_tensors() -> dict[str, dict]:
    """Valid .pnn containers that are no model (for the reader alone)."""
    return {
        "tensors-odd-shapes": {
            "scalar": np.array(1.5, np.float32),
            "empty": np.zeros((0, 3), np.float32),
            "ndim8": dense((1, 2, 1, 2, 1, 2, 1, 2)),
            "half": dense((7,), np.float16),
            "cb-empty-rows": codebook((3, 0), 0.5, 1),
            "cb-1d": codebook((10,), 0.5, 2),
            "cb-none": codebook((4, 4), 0.0, 8, "scaled"),
            "cb-full": codebook((4, 4), 1.0, 16, "per_channel"),
        },
    }


def pnn_bytes(graph: Graph | None = None, tensors=None, metadata=None, rel_bits=None) -> bytes:
    if graph is not None:
        metadata, tensors = graph.to_metadata(), graph.tensors
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.pnn")
        formats.write(path, metadata, tensors, rel_bits=rel_bits)
        with open(path, "rb") as f:
            return f.read()


def pnn_seeds() -> dict[str, bytes]:
    with open(DEMO_MODEL, "rb") as f:
        demo = f.read()
    out = {"seed-demo-lenet5.pnn": demo,
           "seed-demo-lenet5-plain-json.pnn": pnnlayout.plain_metadata(demo)}
    for name, g in model_graphs().items():
        data = pnn_bytes(g)
        out[f"seed-{name}.pnn"] = data
        if name in ("linear-shared", "cnn-per_channel"):
            out[f"seed-{name}-plain-json.pnn"] = pnnlayout.plain_metadata(data)
    out["seed-cnn-shared-rel1.pnn"] = pnn_bytes(model_graphs()["cnn-shared"], rel_bits=1)
    return out


def pnn_only_seeds() -> dict[str, bytes]:
    out = {}
    for name, tensors in container_tensors().items():
        out[f"seed-{name}.pnn"] = pnn_bytes(tensors=tensors, metadata={"any": [1, "x", None]})
    out["seed-no-tensors.pnn"] = pnnlayout.plain_metadata(pnn_bytes(tensors={}, metadata={}))
    return out


# ---- inputs ------------------------------------------------------------------------------------


def _npy(a: np.ndarray, version=None) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, a, version=version, allow_pickle=False)
    return f.getvalue()


def _npz(compressed: bool, **arrays) -> bytes:
    f = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(f, **arrays)
    return f.getvalue()


def _idx(a: np.ndarray) -> bytes:
    types = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = types[a.dtype.str[1:]]
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def input_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (28, 28), dtype=np.uint8)
    batch = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    labels = np.array([3, 7], np.uint8)
    npy, npz, idx, idxgz = 0, 1, 2, 3  # indices into SUFFIXES
    files = {
        "npy-hw-u1": (npy, _npy(img)),
        "npy-nhw-f4": (npy, _npy(batch.astype(np.float32) / 255)),
        "npy-nchw-be-f4": (npy, _npy(batch.reshape(2, 1, 28, 28).astype(">f4"))),
        "npy-fortran-f8": (npy, _npy(np.asfortranarray(img.astype(np.float64)))),
        "npy-v2-i2": (npy, _npy(img.astype(np.int16), version=(2, 0))),
        "npy-bool-chw": (npy, _npy((img > 128).reshape(1, 28, 28))),
        "npz-xy": (npz, _npz(False, x=batch, y=labels)),
        "npz-xy-deflated": (npz, _npz(True, x=batch, y=labels)),
        "npz-images-labels": (npz, _npz(True, images=img, labels=labels[:1])),
        "npz-one-array": (npz, _npz(False, anything=batch[:1])),
        "idx-u1": (idx, _idx(batch)),
        "idx-f8-hw": (idx, _idx(img.astype(np.float64) / 255)),
        "idx-i4-nchw": (idx, _idx(batch.reshape(2, 1, 28, 28).astype(np.int32))),
        "idx-labels": (idx, _idx(labels)),
        "idxgz-u1": (idxgz, gzip.compress(_idx(batch), mtime=0)),
        "idxgz-i2": (idxgz, gzip.compress(_idx(img.astype(np.int16)), mtime=0)),
    }
    return {f"seed-{name}": bytes([sel]) + data for name, (sel, data) in files.items()}


def all_seeds() -> dict[str, dict[str, bytes]]:
    pnn = pnn_seeds()
    out = {"model": dict(pnn), "pnn": {**pnn, **pnn_only_seeds()}, "input": input_seeds()}
    assert SUFFIXES[0] == ".npy"
    for target, files in out.items():
        for name, data in files.items():
            assert len(data) < MAX_SEED_BYTES, f"{target}/{name}: {len(data)} bytes"
    return out


def write_seeds(root: str = CORPUS) -> list[str]:
    """Write every seed under root/TARGET/ (replacing older seed-* files); returns the paths."""
    written = []
    for target, files in all_seeds().items():
        d = os.path.join(root, target)
        os.makedirs(d, exist_ok=True)
        for old in os.listdir(d):
            if old.startswith("seed-") and old not in files:
                os.remove(os.path.join(d, old))
        for name, data in files.items():
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(data)
            written.append(path)
    return written


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=CORPUS, help="corpus root (default %(default)s)")
    args = ap.parse_args(argv)
    paths = write_seeds(args.out)
    total = sum(os.path.getsize(p) for p in paths)
    print(f"{len(paths)} seed files, {total:,} bytes, under {args.out}")


if __name__ == "__main__":
    main()
