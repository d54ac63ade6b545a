"""ONNX nodes -> graph IR nodes (docs/OPS.md): the translation rule of each ONNX op, and the
table of them (RULES). The layout ops and the folded shape arithmetic are in onnx_shape_ops.py,
what the rules share in onnx_context.py.

A rule names the attributes it understands (any other is reported, never ignored), the values
some must hold, and the op versions whose semantics it implements (a newer version is reported:
it may mean something else). Weights keep ONNX's layouts where they agree with ours (conv
weight OIHW, pads [top, left, bottom, right]); Gemm/MatMul weights are transposed to linear's
(O, I) here, and Gemm's alpha and beta are multiplied into them.
"""

from __future__ import annotations

import math

import numpy as np

from compress.importers import onnx_shape_ops as shape
from compress.importers.onnx_context import (
    FOLD_LIMIT,
    Context,
    Rule,
    Unsupported,
    check_axis,
    const_params,
    finite,
    given,
    ints,
    q,
    rank_of,
    shown,
)


def _pads(a: dict, hw, kernel, strides, dilations) -> list[int]:
    """Padding as the IR writes it: [ph, pw] when symmetric, else [top, left, bottom, right]
    (ONNX's order), from pads or auto_pad (computed from the static shape)."""
    top, left, bottom, right = _pads4(a, hw, kernel, strides, dilations)
    return [top, left] if (top, left) == (bottom, right) else [top, left, bottom, right]


def _pads4(a: dict, hw, kernel, strides, dilations) -> list[int]:
    auto = a.get("auto_pad", b"NOTSET").decode(errors="replace")
    if auto == "NOTSET":
        return ints(a, "pads", 4, 0, lo=0)
    if auto == "VALID":
        return [0, 0, 0, 0]
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={q(auto)}")
    begin, end = [], []
    for size, k, s, d in zip(hw, kernel, strides, dilations, strict=True):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, big = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else big)
        end.append(big if auto == "SAME_UPPER" else small)
    return begin + end


# ---- convolution and normalisation --------------------------------------------------------------


def conv(ctx: Context, node, a: dict, ver: int) -> None:
    c, h, w = ctx.image(node.input[0])
    params = const_params(ctx, node, [(1, "weight", "the weight W"), (2, "bias", "the bias B")])
    if "weight" not in params:
        raise Unsupported("no weight")
    weight = params["weight"][0]
    if weight.ndim != 4:
        raise Unsupported(f"{weight.ndim - 2}-d convolution (weight {weight.shape}); only 2-d")
    o, cg, kh, kw = weight.shape
    groups = int(a.get("group", 1))
    if groups < 1 or cg * groups != c or o % groups:
        raise Unsupported(f"group={groups} with weight {weight.shape} on {c} input channels")
    if "kernel_shape" in a and list(a["kernel_shape"]) != [kh, kw]:
        raise Unsupported(f"kernel_shape={list(a['kernel_shape'])} but the weight is {kh}x{kw}")
    if "bias" in params and params["bias"][0].shape != (o,):
        raise Unsupported(f"bias of shape {params['bias'][0].shape} for {o} output channels")
    strides, dil = ints(a, "strides", 2, 1, lo=1), ints(a, "dilations", 2, 1, lo=1)
    attrs = {"stride": strides, "padding": _pads(a, (h, w), (kh, kw), strides, dil)}
    if dil != [1, 1]:
        attrs["dilation"] = dil
    if groups != 1:
        attrs["groups"] = groups
    ctx.emit(node, "conv2d", [node.input[0]], attrs, params)


def batchnorm(ctx: Context, node, a: dict, ver: int) -> None:
    shape = ctx.shape(node.input[0])
    gamma, beta, mean, var = (ctx.number_const(node.input[i], what).astype(np.float64)
                              for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
    if ver < 7 and a.get("is_test", 0) == 0:  # opset 6's default is training
        raise Unsupported("is_test=0 (training-mode statistics)")
    if any(t.shape != (shape[0],) for t in (gamma, beta, mean, var)):
        raise Unsupported(f"statistics of shapes {[t.shape for t in (gamma, beta, mean, var)]} "
                          f"for {shape[0]} channels")
    scale = gamma / np.sqrt(var + finite(a, "epsilon", 1e-5))
    shift = beta - mean * scale
    ctx.emit(node, "batchnorm", [node.input[0]], {},
             {"scale": (scale.astype(np.float32), None), "shift": (shift.astype(np.float32), None)})


# ---- element-wise --------------------------------------------------------------------------------


def _unary(op: str):
    def translate(ctx: Context, node, a: dict, ver: int) -> None:
        ctx.emit(node, op, [node.input[0]])
    return translate


def hardsigmoid(ctx: Context, node, a: dict, ver: int) -> None:
    ctx.emit(node, "hardsigmoid", [node.input[0]],
             {"alpha": finite(a, "alpha", 0.2), "beta": finite(a, "beta", 0.5)})


def clip(ctx: Context, node, a: dict, ver: int) -> None:
    bounds = {}
    for i, key in ((1, "min"), (2, "max")):
        if ver < 11:
            v = a.get(key)
        elif given(node, i):
            c = ctx.number_const(node.input[i], key)
            if c.size != 1:
                raise Unsupported(f"{key} of shape {c.shape}; a scalar is needed")
            v = float(c.reshape(()))
        else:
            v = None
        if v is not None and math.isnan(v):
            raise Unsupported(f"{key} is NaN")
        if v is not None and math.isfinite(v):
            bounds[key] = float(v)
    ctx.emit(node, "clip", [node.input[0]], bounds)


def _per_sample(c: np.ndarray, rank: int) -> np.ndarray:
    """A constant broadcast against a batch-first value of `rank` dims, as the per-sample
    constant `b` of add/mul (broadcast against one sample)."""
    if c.ndim < rank:
        return c
    if c.ndim == rank and c.shape[0] == 1:
        return c.reshape(c.shape[1:])
    if c.ndim == rank:
        raise Unsupported(f"the constant of shape {c.shape} differs along the batch axis")
    raise Unsupported(f"the constant of shape {c.shape} has more dims than the {rank}-d value "
                      f"(the batch would move)")


def _binary(op: str, fold):
    def translate(ctx: Context, node, a: dict, ver: int) -> None:
        x, y = node.input[0], node.input[1]
        legacy = ver < 7 and a.get("broadcast", 0)
        if ctx.is_const(x) and ctx.is_const(y):
            cx, cy = ctx.number_const(x, "A"), ctx.number_const(y, "B")
            if legacy:
                cy = _legacy_broadcast(cy, cx.ndim, a)
            if math.prod(np.broadcast_shapes(cx.shape, cy.shape)) > FOLD_LIMIT:
                raise Unsupported("folding it would make too large a constant")
            ctx.set_const(node, fold(cx, cy))
            return
        if not ctx.is_const(x) and not ctx.is_const(y):
            if legacy and ctx.shape(x) != ctx.shape(y):
                raise Unsupported("opset-6 broadcast=1 between two run-time values")
            if rank_of(ctx, x) != rank_of(ctx, y):
                raise Unsupported(f"run-time values of different ranks {shown(ctx.shapes[x])} and "
                                  f"{shown(ctx.shapes[y])} (the batch axes would not line up)")
            ctx.emit(node, op, [x, y])
            return
        if legacy and ctx.is_const(x):
            raise Unsupported("opset-6 broadcast=1 with the constant as the first operand")
        value, c = (y, x) if ctx.is_const(x) else (x, y)
        c = ctx.number_const(c, "the constant operand").astype(np.float32)
        rank = rank_of(ctx, value)
        if legacy:
            c = _legacy_broadcast(c, rank, a)
        ctx.emit(node, op, [value], {}, {"b": (_per_sample(c, rank), None)})
    return translate


def _legacy_broadcast(c: np.ndarray, rank: int, a: dict) -> np.ndarray:
    """Opset < 7 broadcast=1: B lines up with A's dims from `axis` (default: the last ones)."""
    if "axis" not in a:
        return c
    axis = int(a["axis"]) + (rank if int(a["axis"]) < 0 else 0)
    trailing = rank - axis - c.ndim
    if axis < 0 or trailing < 0:
        raise Unsupported(f"broadcast axis={a['axis']} for a constant of shape {c.shape}")
    return c.reshape(c.shape + (1,) * trailing)


# ---- pooling -------------------------------------------------------------------------------------


def _pool_geometry(ctx: Context, node, a: dict) -> tuple[dict, tuple[int, int]]:
    _, h, w = ctx.image(node.input[0])
    kernel = ints(a, "kernel_shape", 2, 0, lo=1)
    strides, dil = ints(a, "strides", 2, 1, lo=1), ints(a, "dilations", 2, 1, lo=1)
    pads = _pads(a, (h, w), kernel, strides, dil)
    auto = a.get("auto_pad", b"NOTSET") != b"NOTSET"
    attrs = {"kernel": kernel, "stride": strides, "padding": pads,
             "ceil_mode": 0 if auto else int(a.get("ceil_mode", 0))}
    return attrs, tuple(dil)


def maxpool(ctx: Context, node, a: dict, ver: int) -> None:
    attrs, dil = _pool_geometry(ctx, node, a)
    if dil != (1, 1):
        attrs["dilation"] = list(dil)
    ctx.emit(node, "maxpool2d", [node.input[0]], attrs)


def avgpool(ctx: Context, node, a: dict, ver: int) -> None:
    attrs, dil = _pool_geometry(ctx, node, a)
    if dil != (1, 1):
        raise Unsupported(f"dilations={list(dil)} (average pooling without dilation only)")
    attrs["count_include_pad"] = int(a.get("count_include_pad", 0))
    ctx.emit(node, "avgpool2d", [node.input[0]], attrs)


def global_avgpool(ctx: Context, node, a: dict, ver: int) -> None:
    ctx.image(node.input[0])
    ctx.emit(node, "global_avgpool", [node.input[0]])


# ---- softmax -------------------------------------------------------------------------------------


def softmax(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    full = (1, *ctx.shape(x))
    rank = len(full)
    axis = int(a.get("axis", -1 if ver >= 13 else 1))
    axis = check_axis(axis, rank)
    if ver < 13:  # softmax over the flattened dims [axis:]: the same where only one is not 1
        span = [i for i in range(axis, rank) if full[i] != 1]
        if len(span) > 1:
            raise Unsupported(f"opset-{ver} softmax over the flattened dims {axis}.. of "
                              f"{shown(ctx.shapes[x])} (only over one axis)")
        axis = span[0] if span else rank - 1
    ctx.emit(node, "softmax", [x], {"axis": axis})


# ---- fully connected -----------------------------------------------------------------------------


def gemm(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    if rank_of(ctx, x) != 2:
        raise Unsupported(f"A is {shown(ctx.shapes[x])}; Gemm takes (N, K)")
    b = ctx.number_const(node.input[1], "B (the weight)").astype(np.float64)
    if b.ndim != 2:
        raise Unsupported(f"B of shape {b.shape}")
    alpha = finite(a, "alpha", 1.0)
    weight = (b if a.get("transB", 0) else b.T) * alpha  # (O, K)
    (k,) = ctx.shape(x)
    if weight.shape[1] != k:
        raise Unsupported(f"B of shape {b.shape} (transB={a.get('transB', 0)}) for {k} inputs")
    params = {"weight": (weight.astype(np.float32),
                         node.input[1] if a.get("transB", 0) and alpha == 1.0
                         else None)}
    if given(node, 2):
        c = ctx.number_const(node.input[2], "C (the bias)").astype(np.float64)
        c = _per_sample(c, 2) * finite(a, "beta", 1.0)
        try:
            bias = np.broadcast_to(c, (weight.shape[0],))
        except ValueError:
            raise Unsupported(f"C of shape {c.shape} for {weight.shape[0]} outputs") from None
        params["bias"] = (bias.astype(np.float32), None)
    ctx.emit(node, "linear", [x], {}, params)


def matmul(ctx: Context, node, a: dict, ver: int) -> None:
    x = node.input[0]
    if rank_of(ctx, x) != 2:
        raise Unsupported(f"A is {shown(ctx.shapes[x])}; only (N, K) @ constant (K, O)")
    b = ctx.number_const(node.input[1], "B (the weight)")
    if b.ndim != 2 or b.shape[0] != ctx.shape(x)[0]:
        raise Unsupported(f"B of shape {b.shape} for {ctx.shape(x)[0]} inputs")
    ctx.emit(node, "linear", [x], {}, {"weight": (np.ascontiguousarray(b.T, np.float32), None)})


# ---- the table -----------------------------------------------------------------------------------

_POOL = ("auto_pad", "kernel_shape", "pads", "strides", "ceil_mode", "dilations")
RULES: dict[str, Rule] = {
    "Conv": Rule(conv, ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"),
                 (1, 11, 22)),
    "BatchNormalization": Rule(batchnorm, ("epsilon", "momentum", "is_test", "spatial",
                                           "training_mode"), (6, 7, 9, 14, 15),
                               {"spatial": 1, "training_mode": 0}),
    "Relu": Rule(_unary("relu"), (), (6, 13, 14)),
    "Sigmoid": Rule(_unary("sigmoid"), (), (6, 13)),
    "HardSwish": Rule(_unary("hardswish"), (), (14, 22)),
    "HardSigmoid": Rule(hardsigmoid, ("alpha", "beta"), (6, 22)),
    "Clip": Rule(clip, ("min", "max"), (6, 11, 12, 13)),
    "Add": Rule(_binary("add", np.add), ("broadcast", "axis"), (6, 7, 13, 14)),
    "Mul": Rule(_binary("mul", np.multiply), ("broadcast", "axis"), (6, 7, 13, 14)),
    "Concat": Rule(shape.concat, ("axis",), (4, 11, 13)),
    "MaxPool": Rule(maxpool, (*_POOL, "storage_order"), (1, 8, 10, 11, 12, 22),
                    {"storage_order": 0}),
    "AveragePool": Rule(avgpool, (*_POOL, "count_include_pad"), (1, 7, 10, 11, 19, 22)),
    "GlobalAveragePool": Rule(global_avgpool, (), (1, 22)),
    "Flatten": Rule(shape.flatten, ("axis",), (1, 9, 11, 13, 21, 23, 24, 25)),
    "Reshape": Rule(shape.reshape, ("shape", "allowzero"), (1, 5, 13, 14, 19, 21, 23, 24, 25)),
    "Gemm": Rule(gemm, ("alpha", "beta", "transA", "transB", "broadcast"), (6, 7, 9, 11, 13),
                 {"transA": 0}),
    "MatMul": Rule(matmul, (), (1, 9, 13)),
    "Softmax": Rule(softmax, ("axis",), (1, 11, 13)),
    "Dropout": Rule(shape.dropout, ("ratio", "is_test", "seed"), (6, 7, 10, 12, 13, 22)),
    "Identity": Rule(shape.identity, (), (1, 13, 14, 16, 19, 21, 23, 24, 25)),
    "Constant": Rule(shape.constant, ("value", "value_float", "value_floats", "value_int",
                                "value_ints"), (1, 9, 11, 12, 13, 19, 21, 23, 24, 25)),
    "Shape": Rule(shape.shape_of, ("start", "end"), (1, 13, 15, 19, 21, 23, 24, 25)),
    "Gather": Rule(shape.gather, ("axis",), (1, 11, 13)),
    "Unsqueeze": Rule(shape.unsqueeze, ("axes",), (1, 11, 13, 21, 23, 24, 25)),
    "Squeeze": Rule(shape.squeeze, ("axes",), (1, 11, 13, 21, 23, 24, 25)),
    "Cast": Rule(shape.cast, ("to", "saturate", "round_mode"), (6, 9, 13, 19, 21, 23, 24, 25, 28)),
    "Slice": Rule(shape.slice_, ("starts", "ends", "axes"), (1, 10, 11, 13)),
}
# Optional outputs a rule does not produce: importing is refused only when something reads them.
EXTRA_OUTPUTS = {"BatchNormalization": "running statistics", "MaxPool": "Indices",
                 "Dropout": "mask"}
