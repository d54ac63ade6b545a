"""maxpool2d: NCHW max pooling, PyTorch/ONNX semantics. attrs {"kernel": [kh, kw], "stride"
(default: the kernel), "padding": p, [ph, pw] or [top, left, bottom, right] (read as -inf),
"dilation": [dh, dw] (1), "ceil_mode": 0 or 1 (0)}; engine/ops/pool_geometry.py checks them."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.pool import maxpool2d_nchw, pool_work
from engine.ops.attrs import check_params
from engine.ops.pool_geometry import Window, window, window_starts

NAME = "maxpool2d"
ATTRS = ("kernel", "stride", "padding", "dilation", "ceil_mode")
INPUTS = (1, 1)  # input values read


def geometry(attrs: dict) -> Window:
    return window(NAME, attrs, ATTRS)


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (C, OH, OW)."""
    (in_shape,) = in_shapes
    win = geometry(attrs)
    check_params(NAME, params, ())
    return win.out_shape(NAME, in_shape)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: for every window (enumerated), the max over its taps that fall inside the
    input (-inf if none), one window at a time."""
    (x,) = xs
    win = geometry(attrs)
    (kh, kw), (sh, sw), (top, left, bottom, right), (dh, dw) = (win.kernel, win.stride,
                                                                 win.pads, win.dilation)
    n, c, h, w = x.shape
    ys = window_starts(h, kh, sh, top, bottom, dh, win.ceil)
    xs_ = window_starts(w, kw, sw, left, right, dw, win.ceil)
    y = np.full((n, c, len(ys), len(xs_)), -np.inf, dtype=np.float32)
    for oy, y0 in enumerate(ys):
        for ox, x0 in enumerate(xs_):
            rows = [r for r in range(y0, y0 + kh * dh, dh) if 0 <= r < h]
            cols = [q for q in range(x0, x0 + kw * dw, dw) if 0 <= q < w]
            if rows and cols:
                y[:, :, oy, ox] = x[:, :, rows][:, :, :, cols].max(axis=(2, 3))
    return y


def select_kernel(backend: str) -> str:
    """The separable NumPy kernel on both backends (engine/kernels/pool.py says why)."""
    check_backend(backend)
    return "maxpool2d_nchw"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element maxima and copies, workspace bytes) per sample: the -inf-padded copy (when the
    windows reach outside the input), KH-1 maxima per element of the (C, OH, WP) row maxima,
    KW-1 per output (a copy when KW is 1); those row maxima (unless they are the output) and
    the copy are the workspace."""
    (in_shape,) = in_shapes
    win = geometry(attrs)
    (kh, kw) = win.kernel
    c, h, w = in_shape
    _, oh, ow = out_shape
    padded, rows, held = pool_work(c, h, w, oh, ow, win.kernel, win.stride, win.pads,
                                   win.dilation)
    return padded + rows * (kh - 1) + c * oh * ow * max(kw - 1, 1), 4 * (padded + held)


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    win = geometry(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    kernel, stride, pads, dilation = win.kernel, win.stride, win.pads, win.dilation
    sizes = {}  # (H, W) -> (OH, OW), checked once per input size

    def fn(x):
        out = sizes.get(x.shape[2:])
        if out is None:
            out = sizes[x.shape[2:]] = win.out_shape(NAME, x.shape[1:])[1:]
        return maxpool2d_nchw(x, *out, kernel, stride, pads, dilation)
    return Kernel(name, fn)
