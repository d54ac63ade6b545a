"""The op registry: one module per op (docs/OPS.md), each with

    NAME, ATTRS, PARAMS (required, optional roles), INPUTS (min, max input values)
    infer_shape(attrs, in_shapes, param_shapes) -> out_shape   # per sample, no batch dim
    reference(xs, attrs, dense_params) -> y                    # batch first; the oracle
    cost(attrs, in_shapes, out_shape, params, backend) -> (macs, workspace bytes) per sample
    build(attrs, params, backend) -> Kernel                    # Kernel(*xs) -> y
"""

from __future__ import annotations

from engine.kernels import Kernel
from engine.ops import (
    add,
    avgpool2d,
    batchnorm,
    clip,
    concat,
    conv2d,
    flatten,
    global_avgpool,
    hardsigmoid,
    hardswish,
    identity,
    linear,
    maxpool2d,
    mul,
    relu,
    reshape,
    sigmoid,
    softmax,
)

OPS = {m.NAME: m for m in (conv2d, linear, relu, maxpool2d, flatten, softmax,
                           batchnorm, clip, sigmoid, hardsigmoid, hardswish, add, mul, concat,
                           avgpool2d, global_avgpool, reshape, identity)}


def get_op(name: str):
    """The op module registered as `name`."""
    try:
        return OPS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown op {name!r}; known ops: {', '.join(sorted(OPS))}") from None


__all__ = ["OPS", "Kernel", "get_op"]
