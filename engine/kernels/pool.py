"""Pooling kernels on NCHW float32: max and average over 2-d windows, and the global average.

Geometry follows PyTorch and ONNX: padding (top, left, bottom, right), dilation (max pooling
only), and ceil mode, where the last window may hang past the padded input but must start
inside the input or its leading padding (`pool_out_size`). Max pooling reads padding as -inf;
average pooling divides by the window's elements inside the input, or with count_include_pad
by those inside the padded input (PyTorch's divisor: the part of a ceil-mode window past the
trailing padding is not counted).

The input is copied into a padded buffer only when the windows reach outside it; each window
is then reduced separably, along the height over whole contiguous rows, then along the width:
LeNet-5's 2x2 pools take 20-28% less time than with the KH*KW strided taps used before
(benchmarks/test_layers.py), and a 1500-wide window costs 3,000 ufunc calls, not 2.25
million. Both backends run these: Numba loops over the windows (direct, or separable with a
row buffer) took 0.6x to 3.5x their time on LeNet-5's pools and on padded and ceil-mode 3x3/2
pools of 16-64 channels at 28-112 pixels, slower in most cases: not a clear enough gain for a
second kernel to keep equal to the first.
The oracles live beside the ops (engine/ops/maxpool2d.py, avgpool2d.py).
"""

from __future__ import annotations

import numpy as np


def pool_out_size(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int = 1, ceil: bool = False) -> int:
    """Windows along one axis: floor (or ceil) of (size + pads - span) / stride, plus one, where
    span = (k - 1) * dilation + 1; in ceil mode a window that would start past the input and
    its leading padding is dropped (PyTorch's pooling_output_shape; ONNX's reference agrees).
    Below 1: the input is too small."""
    room = size + pad_begin + pad_end - ((k - 1) * dilation + 1)
    out = (room + (stride - 1 if ceil else 0)) // stride + 1
    if ceil and (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def _check_x4(x, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 4:
        got = (f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray)
               else type(x).__name__)
        raise ValueError(f"{what}: x must be a float32 (N, C, H, W) array, got {got}")
    return np.ascontiguousarray(x)


def _span(k: int, d: int) -> int:
    return (k - 1) * d + 1


def _padded(x, top: int, left: int, hp: int, wp: int, fill: float) -> np.ndarray:
    """x placed at (top, left) in a (N, C, hp, wp) buffer whose other elements are `fill`: the
    rows and columns the windows reach, no more. Each element is written once (np.full, then
    the copy, wrote the middle twice: 790 -> 570 us for 64x112x112)."""
    n, c, h, w = x.shape
    xp = np.empty((n, c, hp, wp), dtype=np.float32)
    rows, cols = min(h, hp - top), min(w, wp - left)
    xp[:, :, :top] = fill
    xp[:, :, top + rows:] = fill
    xp[:, :, top:top + rows, :left] = fill
    xp[:, :, top:top + rows, left + cols:] = fill
    xp[:, :, top:top + rows, left:left + cols] = x[:, :, :rows, :cols]
    return xp


def padded_size(h: int, w: int, oh: int, ow: int, kernel, stride, pads, dilation=(1, 1)):
    """(hp, wp) of the buffer the NumPy kernels pool over, or None when they read x as is."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    top, left = pads[0], pads[1]
    hp, wp = top + (oh - 1) * sh + _span(kh, dh), left + (ow - 1) * sw + _span(kw, dw)
    return None if top == 0 and left == 0 and hp <= h and wp <= w else (hp, wp)


def pool_work(c: int, h: int, w: int, oh: int, ow: int, kernel, stride, pads,
              dilation=(1, 1)) -> tuple[int, int, int]:
    """(padded, rows, rows_held): elements per sample of the padded copy (0 when the input is
    read as is), of the height-reduced (C, OH, WP) intermediate (0 for a 1-high window), and
    of it held beside the output (0 when it is the output: a 1-wide window at stride 1)."""
    size = padded_size(h, w, oh, ow, kernel, stride, pads, dilation)
    wp = w if size is None else size[1]
    padded = 0 if size is None else c * size[0] * size[1]
    rows = 0 if kernel[0] == 1 else c * oh * wp
    held = 0 if kernel[1] == 1 and stride[1] == 1 and ow == wp else rows
    return padded, rows, held


def _separable(xp, oh: int, ow: int, kernel, stride, dilation, ufunc) -> np.ndarray:
    """ufunc-reduce (np.maximum or np.add) every window of xp, which holds them all: along the
    height first (contiguous rows, (N, C, OH, WP)), then along the width -> (N, C, OH, OW)."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    rows_end, cols_end = sh * (oh - 1) + 1, sw * (ow - 1) + 1

    def row(ky):
        return xp[:, :, ky * dh:ky * dh + rows_end:sh]

    r = row(0) if kh == 1 else ufunc(row(0), row(1))
    for ky in range(2, kh):
        ufunc(r, row(ky), out=r)

    def col(kx):
        return r[:, :, :, kx * dw:kx * dw + cols_end:sw]

    if kw == 1:
        return np.ascontiguousarray(col(0)) if kh > 1 else col(0).copy()
    y = ufunc(col(0), col(1))
    for kx in range(2, kw):
        ufunc(y, col(kx), out=y)
    return y


# ---------------------------------------------------------------------------------------------
# max pooling


def maxpool2d_nchw(x, oh: int, ow: int, kernel, stride, pads, dilation=(1, 1)) -> np.ndarray:
    """(N, C, H, W) -> (N, C, oh, ow), NumPy: the max over each window, padding -inf. oh, ow
    come from pool_out_size; pads (top, left, bottom, right) only place the input (what a
    ceil-mode window hangs past is -inf too)."""
    x = _check_x4(x, "maxpool2d_nchw")
    n, c, h, w = x.shape
    size = padded_size(h, w, oh, ow, kernel, stride, pads, dilation)
    xp = x if size is None else _padded(x, pads[0], pads[1], *size, -np.inf)
    return _separable(xp, oh, ow, kernel, stride, dilation, np.maximum)


# ---------------------------------------------------------------------------------------------
# average pooling


def avgpool_divisors(size: int, out: int, k: int, stride: int, pad_begin: int, pad_end: int,
                     count_include_pad: bool) -> np.ndarray:
    """Per window along one axis, the elements it averages: those inside the input, or with
    count_include_pad those inside the padded input (not the overhang of a ceil-mode window).
    The 2-d divisor is the outer product of the two axes'. float32 (out,)."""
    start = np.arange(out, dtype=np.int64) * stride - pad_begin
    end = start + k
    if count_include_pad:
        n = np.minimum(end, size + pad_end) - start
    else:
        n = np.minimum(end, size) - np.maximum(start, 0)
    return n.astype(np.float32)


def avgpool2d_nchw(x, oh: int, ow: int, kernel, stride, pads, divisor) -> np.ndarray:
    """(N, C, H, W) -> (N, C, oh, ow), NumPy: window sums over a zero-padded input, divided by
    `divisor` (oh, ow) float32 (avgpool_divisors of each axis, outer product)."""
    x = _check_x4(x, "avgpool2d_nchw")
    n, c, h, w = x.shape
    size = padded_size(h, w, oh, ow, kernel, stride, pads)
    xp = x if size is None else _padded(x, pads[0], pads[1], *size, 0.0)
    y = _separable(xp, oh, ow, kernel, stride, (1, 1), np.add)
    y /= divisor
    return y


# ---------------------------------------------------------------------------------------------
# global average


def global_avgpool_nchw(x) -> np.ndarray:
    """(N, C, H, W) -> (N, C, 1, 1): the mean of each plane (NumPy's pairwise float32 sum)."""
    x = _check_x4(x, "global_avgpool_nchw")
    n, c, h, w = x.shape
    y = np.add.reduce(x.reshape(n, c, h * w), axis=2)
    y /= np.float32(h * w)
    return y.reshape(n, c, 1, 1)
