"""Fashion-MNIST from the IDX files of Debian's dataset-fashion-mnist package.

    ds = load_fashion_mnist()          # x_* (N, 28, 28) uint8, y_* (N,) int64
    small = subset(ds, 3000, 1000)     # seeded, stratified: quick tests

Every problem (missing directory or file, unreadable or malformed file) raises DatasetError,
one line naming the file and how to get the data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from engine.inputs import InputError, read_idx
from engine.ir import Preprocess

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist/"
HOW_TO_GET = ("install Debian's package dataset-fashion-mnist "
              "(apt-get install dataset-fashion-mnist) or pass --data DIR")

# Class names in label order (zalandoresearch/fashion-mnist README).
FASHION_MNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# Training-set pixel mean and std after /255 (the figures docs/../compression-reference.md used).
FASHION_MNIST_PREPROCESS = Preprocess(scale=1.0 / 255.0, mean=[0.2860], std=[0.3530])

_FILES = {  # split -> (images stem, labels stem, expected count)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10000),
}
NUM_CLASSES = 10


class DatasetError(ValueError):
    """The dataset is missing or malformed; the message names the file and the fix."""


@dataclass
class Dataset:
    x_train: np.ndarray  # (N, 28, 28) uint8
    y_train: np.ndarray  # (N,) int64 in 0..9
    x_test: np.ndarray
    y_test: np.ndarray


def _find(data_dir: str, stem: str) -> str:
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DatasetError(f"{os.path.join(data_dir, stem)}[.gz]: no such file; {HOW_TO_GET}")


def _read(path: str) -> np.ndarray:
    try:
        return read_idx(path)
    except InputError as e:
        raise DatasetError(f"{e}; {HOW_TO_GET}") from None


def _load_split(data_dir: str, split: str, check_count: bool) -> tuple[np.ndarray, np.ndarray]:
    img_stem, lab_stem, count = _FILES[split]
    img_path, lab_path = _find(data_dir, img_stem), _find(data_dir, lab_stem)
    x, y = _read(img_path), _read(lab_path)
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise DatasetError(f"{img_path}: expected uint8 images of shape (N, 28, 28), found "
                           f"{x.dtype} {tuple(x.shape)}; {HOW_TO_GET}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DatasetError(f"{lab_path}: expected a 1-D integer label array, found "
                           f"{y.dtype} {tuple(y.shape)}; {HOW_TO_GET}")
    if len(y) != len(x):
        raise DatasetError(f"{lab_path}: {len(y)} labels for {len(x)} images in {img_path}; "
                           f"{HOW_TO_GET}")
    if check_count and len(x) != count:
        raise DatasetError(f"{img_path}: {len(x)} images, expected {count}; {HOW_TO_GET}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES):
        raise DatasetError(f"{lab_path}: labels out of range 0..{NUM_CLASSES - 1} "
                           f"(found {int(y.min())}..{int(y.max())}); {HOW_TO_GET}")
    return x, y.astype(np.int64)


def load_fashion_mnist(data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
                       check_counts: bool = True) -> Dataset:
    """Load the four IDX files (.gz or uncompressed) from data_dir.

    check_counts: require the official 60,000 / 10,000 images (off for hand-made test dirs).
    """
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such directory; {HOW_TO_GET}")
    x_train, y_train = _load_split(data_dir, "train", check_counts)
    x_test, y_test = _load_split(data_dir, "test", check_counts)
    return Dataset(x_train, y_train, x_test, y_test)


def _pick(y: np.ndarray, n: int, rng: np.random.Generator, stratified: bool) -> np.ndarray:
    if n >= len(y):
        return rng.permutation(len(y))
    if not stratified:
        return np.sort(rng.choice(len(y), size=n, replace=False))
    classes = np.unique(y)
    per = np.full(len(classes), n // len(classes))
    per[: n % len(classes)] += 1
    idx = [rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False)
           for c, k in zip(classes, per, strict=True)]
    return np.sort(np.concatenate(idx))


def subset(ds: Dataset, n_train: int, n_test: int, seed: int = 0,
           stratified: bool = True) -> Dataset:
    """A seeded subset: n_train training and n_test test images, balanced over the classes
    when stratified (else uniformly at random). The subset's arrays are copies."""
    rng = np.random.default_rng(seed)
    i = _pick(ds.y_train, n_train, rng, stratified)
    j = _pick(ds.y_test, n_test, rng, stratified)
    return Dataset(ds.x_train[i], ds.y_train[i], ds.x_test[j], ds.y_test[j])
