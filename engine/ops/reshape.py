"""reshape: a new per-sample shape, the batch kept. attrs {"shape": [d1, ...]}: the target
per sample, each dim >= 1 or one -1 (inferred); the element count must match. ONNX's 0
(copy a dim) is resolved by an importer, not here."""

from __future__ import annotations

import math

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.ops.attrs import check_attrs, check_params, integer

NAME = "reshape"
ATTRS = ("shape",)
INPUTS = (1, 1)  # input values read
MAX_DIMS = 16  # per sample; NumPy's limit is 64 (32 before 2.0) with the batch


def target(attrs: dict) -> list[int]:
    """The checked target, -1 still unresolved."""
    check_attrs(NAME, attrs, ATTRS)
    if "shape" not in attrs:
        raise ValueError("reshape: missing attr 'shape'")
    shape = attrs["shape"]
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS:
        raise ValueError(f"reshape: shape must be a list of at most {MAX_DIMS} ints, got "
                         f"{shape!r:.60}")
    dims = [integer(d, "reshape: shape", -1) for d in shape]
    if 0 in dims:
        raise ValueError(f"reshape: shape {dims} holds a 0; dims are >= 1, or one -1")
    if dims.count(-1) > 1:
        raise ValueError(f"reshape: shape {dims} holds more than one -1")
    return dims


def resolve(attrs: dict, in_shape: tuple) -> tuple:
    """The per-sample output shape for a per-sample input shape."""
    dims = target(attrs)
    size, known = math.prod(in_shape), math.prod(d for d in dims if d != -1)
    if -1 in dims:
        if size % known:
            raise ValueError(f"reshape: shape {dims} does not fit {tuple(in_shape)} "
                             f"({size} values per sample are not a multiple of {known})")
        dims[dims.index(-1)] = size // known
    elif known != size:
        raise ValueError(f"reshape: shape {dims} holds {known} values per sample, the input "
                         f"{tuple(in_shape)} {size}")
    return tuple(dims)


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    (in_shape,) = in_shapes
    check_params(NAME, params, ())
    return resolve(attrs, tuple(in_shape))


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: the elements in C order, refilled into the new shape one by one."""
    (x,) = xs
    shape = resolve(attrs, x.shape[1:])
    flat = list(np.asarray(x, np.float32).flat)
    return np.array(flat, dtype=np.float32).reshape((x.shape[0], *shape))


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "reshape_view"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element copies, workspace bytes) per sample: a copy only if the input is strided
    (values are contiguous: a view, in practice)."""
    (in_shape,) = in_shapes
    return math.prod(in_shape), 0


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    target(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    shapes = {}  # per-sample input shape -> output shape, resolved once

    def fn(x):
        out = shapes.get(x.shape[1:])
        if out is None:
            out = shapes[x.shape[1:]] = resolve(attrs, x.shape[1:])
        return np.ascontiguousarray(x).reshape((x.shape[0], *out))
    return Kernel(name, fn)
