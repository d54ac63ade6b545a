"""ONNX's layout ops and the shape arithmetic around them, as graph IR (see onnx_ops.py).

Concat, Flatten, Reshape, Squeeze and Unsqueeze of run-time values become concat, flatten or
reshape nodes, where they keep the batch as the first axis; Identity and Dropout disappear.
On constants these ops, and Shape, Gather, Cast, Slice, are folded: torch exports
x.view(x.size(0), -1) as Shape -> Gather -> Unsqueeze -> Concat -> Reshape, which folds to a
Reshape whose target holds the batch size as the symbol BATCH, which a flatten expresses.
"""

from __future__ import annotations

import math

import numpy as np

from compress.importers.onnx_context import (
    BATCH,
    FOLD_LIMIT,
    Context,
    Unsupported,
    check_axis,
    given,
    rank_of,
    shown,
)


def concat(ctx: Context, node, a: dict, ver: int) -> None:
    names = list(node.input)
    if all(ctx.is_const(n) for n in names):
        arrays = [ctx.const(n, "input") for n in names]
        if sum(c.size for c in arrays) > FOLD_LIMIT:  # one constant listed 10,000 times
            raise Unsupported("folding it would make too large a constant")
        ctx.set_const(node, np.concatenate(arrays, axis=int(a.get("axis", 0))))
        return
    if any(ctx.is_const(n) for n in names):
        raise Unsupported("concatenates constants with run-time values")
    rank = rank_of(ctx, names[0])
    if any(rank_of(ctx, n) != rank for n in names):
        raise Unsupported("inputs of different ranks")
    if "axis" not in a:
        raise Unsupported("no axis attribute")
    ctx.emit(node, "concat", names, {"axis": check_axis(int(a["axis"]), rank)})


def flatten(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    axis = int(a.get("axis", 1))
    if ctx.is_const(x):
        c = ctx.const(x, "input")
        axis += c.ndim if axis < 0 else 0
        ctx.set_const(node, c.reshape(math.prod(c.shape[:axis]), -1))
        return
    rank = rank_of(ctx, x)
    axis += rank if axis < 0 else 0
    if axis != 1:
        raise Unsupported(f"axis={a.get('axis', 1)} on a {rank}-d value merges the batch axis "
                          f"with others (only axis 1 keeps it)")
    if rank == 2:
        ctx.alias(node, x)
    else:
        ctx.emit(node, "flatten", [x], {"start_dim": 1})


def reshape(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    target = list(a.get("shape", [])) if ver < 5 else list(ctx.const(node.input[1], "shape"))
    if ctx.is_const(x):
        c = ctx.number_const(x, "data")
        dims = [c.shape[i] if d == 0 and not a.get("allowzero") else d
                for i, d in enumerate(target)]
        if any(d is BATCH for d in dims):
            raise Unsupported("reshapes a constant by the batch size")
        ctx.set_const(node, c.reshape([int(d) for d in dims]))
        return
    shape = ctx.shape(x)
    if a.get("allowzero") and any(d is not BATCH and int(d) == 0 for d in target):
        raise Unsupported("allowzero=1 with a 0 in the target shape")
    if not target:
        raise Unsupported("reshape to a scalar drops the batch axis")
    first, rest = target[0], [d if d is BATCH else int(d) for d in target[1:]]
    size = math.prod(shape)
    rest = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(rest)]
    if any(d is BATCH for d in rest):
        raise Unsupported(f"target {target} puts the batch size after the first axis")
    if rest.count(-1) > 1 or any(d < -1 or d == 0 for d in rest):
        raise Unsupported(f"target shape {target}")
    known = math.prod(d for d in rest if d != -1)
    keeps_batch = (first is BATCH or int(first) in (0, ctx.static_batch)
                   or (int(first) == -1 and -1 not in rest and known == size))
    if not keeps_batch:
        raise Unsupported(f"target shape {target} does not keep the batch as the first axis")
    if -1 in rest:
        if known == 0 or size % known:
            raise Unsupported(f"target shape {target} does not fit {size} values per sample")
        rest[rest.index(-1)] = size // known
    if math.prod(rest) != size:
        raise Unsupported(f"target shape {target} does not fit per-sample shape {shape}")
    _reshape_value(ctx, node, x, rest)


# ---- no-ops and constants ------------------------------------------------------------------------


def identity(ctx: Context, node, a: dict, ver: int) -> None:
    ctx.alias(node, node.input[0])


def dropout(ctx: Context, node, a: dict, ver: int) -> None:
    if ver < 7 and a.get("is_test", 0) == 0:
        raise Unsupported("is_test=0 (training-mode dropout)")
    if ver >= 12 and given(node, 2):
        mode = ctx.number_const(node.input[2], "training_mode")
        if mode.size != 1 or bool(mode.reshape(())):
            raise Unsupported("training_mode is true")
    ctx.alias(node, node.input[0])


def constant(ctx: Context, node, a: dict, ver: int) -> None:
    from onnx import numpy_helper  # the importer made sure onnx is there

    if "value" in a:
        ctx.set_const(node, numpy_helper.to_array(a["value"]))
    elif "value_float" in a or "value_int" in a:
        v = a.get("value_float", a.get("value_int"))
        ctx.set_const(node, np.array(v, np.float32 if "value_float" in a else np.int64))
    elif "value_floats" in a:
        ctx.set_const(node, np.array(a["value_floats"], np.float32))
    elif "value_ints" in a:
        ctx.set_const(node, np.array(a["value_ints"], np.int64))
    else:
        raise Unsupported("no value")


# ---- shape arithmetic, folded (torch's x.view(x.size(0), -1)) -----------------------------------


def shape_of(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    if ctx.is_const(x):
        dims = list(ctx.const(x, "input").shape)
    else:
        dims = [BATCH, *ctx.shape(x)]
    start, end = int(a.get("start", 0)), a.get("end")
    dims = dims[start:] if end is None else dims[start:int(end)]
    ctx.set_const(node, np.array(dims, dtype=object if BATCH in dims else np.int64))


def gather(ctx: Context, node, a: dict, ver: int) -> None:
    data = ctx.const(node.input[0], "data")
    idx = ctx.number_const(node.input[1], "indices")
    if idx.dtype.kind not in "iu":
        raise Unsupported(f"indices of type {idx.dtype}")
    axis = int(a.get("axis", 0))
    if data.ndim == 0 or idx.size * data.size // max(data.shape[axis], 1) > FOLD_LIMIT:
        raise Unsupported(f"gathers {idx.size:,} entries along axis {axis} of {data.shape}")
    try:
        ctx.set_const(node, np.take(data, idx, axis=axis))
    except (IndexError, ValueError) as e:  # numpy's AxisError is both
        raise Unsupported(f"index out of range ({e})") from None


def _axes(ctx: Context, node, a: dict, ver: int) -> list[int] | None:
    if ver < 13:
        return [int(v) for v in a["axes"]] if "axes" in a else None
    if given(node, 1):
        return [int(v) for v in ctx.number_const(node.input[1], "axes").reshape(-1)]
    return None


def unsqueeze(ctx: Context, node, a: dict, ver: int) -> None:
    axes = _axes(ctx, node, a, ver)
    if axes is None:
        raise Unsupported("no axes")
    x = node.input[0]
    full = ctx.const(x, "data").shape if ctx.is_const(x) else (1, *ctx.shape(x))
    rank = len(full) + len(axes)
    axes = sorted(v + rank if v < 0 else v for v in axes)
    if ctx.is_const(x):
        ctx.set_const(node, np.expand_dims(ctx.consts[x], tuple(axes)))
        return
    if axes[0] == 0 or len(set(axes)) != len(axes) or axes[-1] >= rank:
        raise Unsupported(f"axes {axes} on the batch axis or out of range")
    out = list(full)
    for v in axes:
        out.insert(v, 1)
    _reshape_value(ctx, node, x, out[1:])


def squeeze(ctx: Context, node, a: dict, ver: int) -> None:
    axes = _axes(ctx, node, a, ver)
    x = node.input[0]
    if ctx.is_const(x):
        c = ctx.consts[x]
        if axes is not None and any(c.shape[v] != 1 for v in axes):
            raise Unsupported(f"squeezes axes {axes} of a constant of shape {c.shape}")
        ctx.set_const(node, np.squeeze(c, None if axes is None else tuple(axes)))
        return
    shape = ctx.shape(x)
    if axes is None:  # every dim of 1, but never the batch (its size is not known here)
        axes = [i + 1 for i, d in enumerate(shape) if d == 1]
    axes = {check_axis(v, 1 + len(shape), "axes") for v in axes}
    if any(shape[v - 1] != 1 for v in axes):
        raise Unsupported(f"squeezes axes of size other than 1 in {shown(ctx.shapes[x])}")
    _reshape_value(ctx, node, x, [d for i, d in enumerate(shape) if i + 1 not in axes])


def _reshape_value(ctx: Context, node, x: str, per_sample: list[int]) -> None:
    """node.output[0] is run-time value x with a new per-sample shape (as many values)."""
    if tuple(per_sample) == ctx.shape(x):
        ctx.alias(node, x)
    elif len(per_sample) == 1:
        ctx.emit(node, "flatten", [x], {"start_dim": 1})
    else:
        ctx.emit(node, "reshape", [x], {"shape": list(per_sample)})


def cast(ctx: Context, node, a: dict, ver: int) -> None:
    from onnx import helper

    c = ctx.const(node.input[0], "input")
    to = np.dtype(helper.tensor_dtype_to_np_dtype(int(a["to"])))
    if c.dtype == object:
        if to.kind not in "iu":
            raise Unsupported("casts the batch size to a non-integer")
        ctx.set_const(node, c)
    else:
        ctx.set_const(node, c.astype(to))


def slice_(ctx: Context, node, a: dict, ver: int) -> None:
    c = ctx.const(node.input[0], "data")
    if ver < 10:
        starts, ends = list(a.get("starts", [])), list(a.get("ends", []))
        axes, steps = a.get("axes"), None
    else:
        starts, ends = (list(ctx.number_const(node.input[i], w).reshape(-1))
                        for i, w in ((1, "starts"), (2, "ends")))
        axes = list(ctx.number_const(node.input[3], "axes").reshape(-1)) if given(node, 3) else None
        steps = list(ctx.number_const(node.input[4], "steps").reshape(-1)) if given(node, 4) \
            else None
    axes = list(range(len(starts))) if axes is None else [int(x) for x in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    if not len(starts) == len(ends) == len(axes) == len(steps) or 0 in steps:
        raise Unsupported("starts, ends, axes and steps disagree")
    index = [slice(None)] * c.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        index[ax] = slice(int(s), int(e), st)
    ctx.set_const(node, c[tuple(index)])
