"""What a loaded file is compared with: tensors and metadata compared by their bytes, weights
made dense from the stored arrays, and a forward pass through the ops' plain NumPy `reference`
functions in an evaluation order of its own."""

from __future__ import annotations

import json
import math

import numpy as np

from engine.ops import OPS
from formats.tensors import CodebookTensor

RTOL = ATOL = 1e-4


def canon_json(v) -> str:
    return json.dumps(v, sort_keys=True, allow_nan=True, ensure_ascii=True)


def tensor_diff(a, b) -> str | None:
    """Why `b` differs from `a`, or None: dtypes (the documented ones: formats.index_dtype,
    code_dtype), shapes, then values; floats by their bytes (NaN, -0.0)."""
    if isinstance(a, CodebookTensor) != isinstance(b, CodebookTensor):
        return f"{type(a).__name__} vs {type(b).__name__}"
    if not isinstance(a, CodebookTensor):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        return None if a.tobytes() == b.tobytes() else "dense values differ"
    if tuple(a.shape) != tuple(b.shape) or a.bits != b.bits:
        return f"shape/bits {a.shape}/{a.bits} vs {b.shape}/{b.bits}"
    for f in ("indptr", "indices", "codes"):
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        if x.shape != y.shape or not np.array_equal(x.astype(np.int64), y.astype(np.int64)):
            return f"{f} differ"
        if x.dtype != y.dtype:
            return f"{f} dtype {x.dtype} vs {y.dtype}"
    for f in ("codebook", "scale"):
        x, y = getattr(a, f), getattr(b, f)
        if (x is None) != (y is None):
            return f"{f} present in one only"
        if x is not None:
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
                return f"{f} differ"
    return None


def tensors_diff(a: dict, b: dict) -> str | None:
    if list(a) != list(b):
        return f"tensor names {list(a)[:5]} vs {list(b)[:5]}"
    for name in a:
        why = tensor_diff(a[name], b[name])
        if why:
            return f"tensor {name!r}: {why}"
    return None


def densify(t) -> np.ndarray:
    """float32 dense weight, built here from the stored arrays (not CodebookTensor.to_dense):
    value = scale[o] * codebook[o or 0][code] at each listed position, zero elsewhere."""
    if not isinstance(t, CodebookTensor):
        return np.asarray(t).astype(np.float32)
    rows = int(t.shape[0])
    row_size = math.prod(t.shape[1:])
    out = np.zeros(rows * row_size, dtype=np.float32)
    book = np.asarray(t.codebook, dtype=np.float32)
    indptr = np.asarray(t.indptr)
    for o in range(rows):
        lo, hi = int(indptr[o]), int(indptr[o + 1])
        if lo == hi:
            continue
        codes = np.asarray(t.codes[lo:hi], dtype=np.intp)
        vals = (book[o] if book.ndim == 2 else book)[codes]
        if t.scale is not None:
            vals = np.float32(t.scale[o]) * vals
        out[o * row_size + np.asarray(t.indices[lo:hi], dtype=np.int64)] = vals
    return out.reshape(t.shape)


def batch_input(shape) -> np.ndarray:
    """What targets.load_and_run feeds: a batch of 2, zeros then ones."""
    x = np.zeros((2, *shape), np.float32)
    x[1] = 1.0
    return x



def _topological(g: dict) -> list[dict]:
    """The nodes in an order where each runs after the values it reads are written (any such
    order gives the same values); ValueError for a value written twice or never, or a cycle."""
    written = [g["input"]["name"]] + [v for n in g["nodes"] for v in n["outputs"]]
    if len(set(written)) != len(written) or any(len(n["outputs"]) != 1 for n in g["nodes"]):
        raise ValueError("a value written twice, or a node without exactly one output")
    known, order, pending = {g["input"]["name"]}, [], list(g["nodes"])
    while pending:
        ready = [n for n in pending if all(v in known for v in n["inputs"])]
        if not ready:
            raise ValueError("a cycle, or a value no node writes")
        order += ready
        known.update(n["outputs"][0] for n in ready)
        pending = [n for n in pending if not any(n is r for r in ready)]
    return order


def reference_forward(metadata: dict, tensors: dict) -> tuple[np.ndarray, float, bool]:
    """(output, magnitude, finite): the graph run through the ops' `reference` functions on
    weights made dense by `densify`; magnitude is the largest value of the same pass on
    |weights|, |input| (what the float32 rounding of any summation order is proportional to);
    finite says whether every dense weight used and every value computed was finite (only then
    is the model's answer free of IEEE corner cases such as 0 * inf and relu(NaN))."""
    g = metadata["graph"]
    x = batch_input(g["input"]["shape"])
    values, mags = {g["input"]["name"]: x}, {g["input"]["name"]: x}
    magnitude, finite = 1.0, True
    dense = {}
    with np.errstate(all="ignore"):
        for n in _topological(g):
            op = OPS[n["op"]]
            lo, hi = op.INPUTS
            if not lo <= len(n["inputs"]) <= hi:
                raise ValueError(f"{n['op']} reads {lo}..{hi} values, given {len(n['inputs'])}")
            attrs = n.get("attrs", {})
            params = {}
            for role, name in n.get("params", {}).items():
                if name not in dense:
                    dense[name] = densify(tensors[name])
                    finite = finite and bool(np.all(np.isfinite(dense[name])))
                params[role] = dense[name]
            y = op.reference([values[v] for v in n["inputs"]], attrs, params)
            if n["op"] == "softmax":  # a 1-Lipschitz map: errors do not grow through it
                m = mags[n["inputs"][0]]
            else:
                m = op.reference([mags[v] for v in n["inputs"]], attrs,
                                 {r: np.abs(p) for r, p in params.items()})
            values[n["outputs"][0]], mags[n["outputs"][0]] = y, m
            finite = finite and bool(np.all(np.isfinite(y)))
            if m.size:
                magnitude = max(magnitude, float(np.max(m)))
    return values[g["output"]], magnitude, finite


def output_diff(got: np.ndarray, want: np.ndarray, magnitude: float) -> tuple[str | None, bool]:
    """(why they differ or None, whether non-finite values are involved)."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"output shape {got.shape} vs reference {want.shape}", False
    fg, fw = np.isfinite(got), np.isfinite(want)
    nonfinite = not (fg.all() and fw.all())
    same_nonfinite = np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(
        np.where(np.isinf(got), np.sign(got), 0), np.where(np.isinf(want), np.sign(want), 0))
    if not same_nonfinite:
        return "non-finite values in different places", True
    both = fg & fw
    if not math.isfinite(magnitude):
        return None, nonfinite
    err = np.abs(got[both].astype(np.float64) - want[both].astype(np.float64))
    tol = RTOL * np.abs(want[both].astype(np.float64)) + ATOL * max(1.0, magnitude)
    if err.size and np.any(err > tol):
        i = int(np.argmax(err - tol))
        return (f"output differs from the reference by {err[i]:.3g} (tolerance {tol[i]:.3g}, "
                f"magnitude {magnitude:.3g})"), nonfinite
    return None, nonfinite


def finite_weights(tensors: dict) -> bool:
    """Every weight value finite in float32: dense values, and scale x codebook entries."""
    f32 = float(np.finfo(np.float32).max)
    with np.errstate(all="ignore"):
        for t in tensors.values():
            if isinstance(t, CodebookTensor):
                book = np.abs(np.asarray(t.codebook, np.float64))
                scale = np.abs(np.asarray(1.0 if t.scale is None else t.scale, np.float64))
                if not (np.all(np.isfinite(book)) and np.all(np.isfinite(scale))):
                    return False
                if book.size and scale.size and book.max() * scale.max() > f32:
                    return False
            elif not np.all(np.isfinite(np.asarray(t, np.float32))):
                return False
    return True


def content_diff(tensors: dict, metadata, want_tensors: dict, want_metadata: dict) -> str | None:
    """Why (tensors, metadata) differ from (want_tensors, want_metadata), or None; the order
    of the tensors is not compared."""
    if sorted(tensors) != sorted(want_tensors):
        return "tensor names differ"
    for name in want_tensors:
        why = tensor_diff(want_tensors[name], tensors[name])
        if why:
            return f"tensor {name!r}: {why}"
    if metadata is None or canon_json(metadata) != canon_json(want_metadata):
        return "metadata differs"
    return None
