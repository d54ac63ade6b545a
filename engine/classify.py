"""Images in, class names out: `preprocess` and `predict` for a loaded Model.

    import engine
    m = engine.load("mobilenet_v2.pnn")
    for tops in engine.predict(m, ["cat.jpg", "dog.png"], top=3):
        print(", ".join(f"{t.label} {t.prob:.1%}" for t in tops))

An input is a file path (an image, or an .npy / .npz / IDX[.gz] array file), a PIL image, an
array (HW, CHW, HWC, NHW, NCHW or NHWC), or a list of those. Image files and PIL images are
decoded, oriented, converted and resized as engine/images.py says; arrays must already be the
model's (H, W). Pixels of images are raw 8-bit values; what an array's values mean is checked
by `Preprocess.apply` (engine/ir.py): integers are raw pixels, floats in 0..1 are refused
unless `input_range=(0, 1)` says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from engine.errors import InputError
from engine.images import fit, is_image_name, is_pil_image, read_image
from engine.inputs import (
    ARRAY_KINDS,
    FOREIGN_MODEL_KINDS,
    IMAGE_KINDS,
    MAX_INPUT_BYTES,
    as_nchw,
    describe_kind,
    read_array,
    sniff,
)

PIXEL_RANGE = (0.0, 255.0)  # what an 8-bit image file's pixels span
DEFAULT_BATCH = 64
DEFAULT_TOP = 5    # ImageNet's top-5; a 10-class model shows 5 of its 10
SHAPE_OPS = ("flatten", "reshape", "identity")  # ops that keep a softmax's output a softmax


class Top(NamedTuple):
    """One of an image's most likely classes."""

    label: str     # the class name stored in the model (its index when it has none)
    prob: float    # probability, 0..1
    index: int     # class index


class Batch(NamedTuple):
    """One input as raw (N, C, H, W) values, with what they mean."""

    source: str                                  # file name, or "input[3]"
    images: np.ndarray                           # raw values, (N, C, H, W)
    labels: np.ndarray | None                    # true labels, where the file has them
    pixels: bool                                 # decoded from an image: 8-bit pixels


# ---- inputs ----------------------------------------------------------------------------------

def read_input(model, path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES) -> Batch:
    """One input file as raw NCHW images for `model`: an image file decoded and fitted to the
    input, an array file read as stored (with its labels, if any). A .pnn file among inputs,
    or a file of an unknown kind, is an InputError saying what it is."""
    path = os.fspath(path)
    kind = sniff(path)
    if kind == "pnn":
        raise InputError(f"{path}: a model, not an input: pass it with -m MODEL (in Python: "
                         f"engine.load); inputs are images or arrays")
    if kind in IMAGE_KINDS or (kind not in ARRAY_KINDS and is_image_name(path)):
        images = read_image(path, model.input_shape, model.graph.preprocess.resize,
                            max_bytes=max_bytes)
        return Batch(path, images, None, True)
    if kind in FOREIGN_MODEL_KINDS:
        raise InputError(f"{path}: {describe_kind(kind)}, not an image or array input")
    images, labels = read_array(path, max_bytes=max_bytes)
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
    return Batch(path, as_nchw(images, model.input_shape, path), labels, False)


def _batches(model, inputs) -> Iterator[Batch]:
    """Every input as a Batch: paths read, PIL images fitted, arrays brought to NCHW."""
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    for i, item in enumerate(items):
        name = f"input[{i}]" if len(items) > 1 else "input"
        if isinstance(item, (str, os.PathLike)):
            yield read_input(model, item)
        elif is_pil_image(item):
            pixels = fit(item, model.input_shape, model.graph.preprocess.resize, name)
            yield Batch(name, pixels[None], None, True)
        else:
            yield Batch(name, as_nchw(item, model.input_shape, name), None, False)


def input_range_for(model, batch: Batch, input_range) -> tuple[float, float] | None:
    """The range to check `batch` against: 8-bit pixels for images (where the model declares
    a raw range), else what the caller said (None: the model's own rule)."""
    if batch.pixels:
        return PIXEL_RANGE if model.graph.preprocess.raw_range is not None else None
    return input_range


def preprocess(model, inputs, *, input_range: tuple[float, float] | None = None) -> np.ndarray:
    """Image files, PIL images, array files or arrays -> the float32 (N, C, H, W) input of
    `model` (its stored preprocessing applied). `input_range` (lo, hi) says what array values
    span, e.g. (0, 1); image pixels are always 0..255."""
    pre = model.graph.preprocess
    xs = [pre.apply(b.images, input_range=input_range_for(model, b, input_range),
                    source=b.source) for b in _batches(model, inputs)]
    if not xs:
        return np.zeros((0, *model.input_shape), np.float32)
    return xs[0] if len(xs) == 1 else np.concatenate(xs)


# ---- outputs ---------------------------------------------------------------------------------

def ends_in_softmax(graph) -> bool:
    """Whether the graph's output is already a softmax (through shape-only ops)."""
    writer = {out: node for node in graph.nodes for out in node.outputs}
    node = writer.get(graph.output_name)
    while node is not None and node.op in SHAPE_OPS and node.inputs:
        node = writer.get(node.inputs[0])
    return node is not None and node.op == "softmax"


def probabilities(model, logits: np.ndarray) -> np.ndarray:
    """float64 (N, classes) probabilities from the model's output: a softmax of the logits,
    or the output itself when the graph ends in a softmax."""
    out = np.asarray(logits, dtype=np.float64).reshape(len(logits), -1)
    if ends_in_softmax(model.graph):
        return out
    out -= out.max(axis=1, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out


def top_k(probs: np.ndarray, k: int | None, labels: list[str]) -> list[list[Top]]:
    """Per row of `probs`, its k most likely classes, most likely first (ties: lower index)."""
    k = probs.shape[1] if k is None else min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[Top(label_of(labels, int(j)), float(p[j]), int(j)) for j in row]
            for p, row in zip(probs, order, strict=True)]


def label_of(labels: list[str], index: int) -> str:
    """The stored class name, or the index as text when the file has none for it."""
    return labels[index] if 0 <= index < len(labels) else str(index)


def batch_size(model, asked: int | None = None) -> int:
    """Images per run: `asked`, or 64 lowered to what fits max_memory."""
    return max(1, min(asked or DEFAULT_BATCH, model.max_batch()))


def classify_batch(model, batch: Batch, k: int | None, *, input_range=None,
             size: int | None = None) -> Iterator[tuple[int, list[Top]]]:
    """(index within the batch, top-k) per image of one input, run `size` images at a time."""
    pre = model.graph.preprocess
    rng = input_range_for(model, batch, input_range)
    size = batch_size(model, size)
    for start in range(0, batch.images.shape[0], size):
        x = pre.apply(batch.images[start:start + size], input_range=rng, source=batch.source)
        probs = probabilities(model, model.run(x))
        for i, tops in enumerate(top_k(probs, k, model.labels)):
            yield start + i, tops


def predict(model, inputs, top: int | None = 5, *,
            input_range: tuple[float, float] | None = None) -> list[list[Top]]:
    """The `top` most likely classes of every image in `inputs` (None: all), one list per
    image in input order, each a list of Top(label, prob, index), most likely first."""
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer or None, got {top!r}")
    return [tops for batch in _batches(model, inputs)
            for _, tops in classify_batch(model, batch, top, input_range=input_range)]
