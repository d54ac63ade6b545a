"""What the fuzzers run. Each target takes the bytes of one file, writes them to `path`, and
goes through the public API the way a user would; it returns normally or raises one of the
EXPECTED errors. Anything else escaping a target (an IndexError, a MemoryError, a Numba
error...) is a finding, and so is a run over the time or memory ceiling the harness sets.

The limits are tighter than the engine's defaults so that every accepted mutant also *runs*
quickly: a model within them costs at most 10**8 multiply-adds and 64 MiB per image batch.
"""

from __future__ import annotations

import os

import numpy as np

import engine
import formats
from engine.inputs import as_nchw, read_array
from engine.runtime import clear_cache

EXPECTED = (formats.FormatError, engine.EngineError)
LIMITS = {"max_memory": 64 << 20, "max_macs": 10**8}
INPUT_BYTES = 16 << 20


def write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def read_pnn(path: str) -> dict:
    """Open, describe and decode every tensor (the reader alone)."""
    with formats.open(path) as f:
        for name in f.tensor_names:
            f.info(name)
        return f.tensors()


def load_and_run(path: str, backend: str = "numpy") -> np.ndarray | None:
    """engine.load + run on a batch of 2 (zeros and ones): the whole engine. Returns the
    logits, or None if the model was refused with an expected error."""
    clear_cache()
    try:
        model = engine.load(path, backend=backend, **LIMITS)
    except EXPECTED:
        return None
    x = np.zeros((2, *model.input_shape), np.float32)
    x[1] = 1.0
    return model.run(x)


def read_input(path: str) -> None:
    """An input file as `python -m engine infer` reads it, then shaped for the demo model."""
    images, labels = read_array(path, max_bytes=INPUT_BYTES)
    as_nchw(images, (1, 28, 28), os.path.basename(path))


TARGETS = {"pnn": read_pnn, "model": load_and_run, "input": read_input}
