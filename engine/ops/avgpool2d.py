"""avgpool2d: NCHW average pooling, PyTorch/ONNX semantics. attrs {"kernel": [kh, kw],
"stride" (default: the kernel), "padding": p, [ph, pw] or [top, left, bottom, right],
"ceil_mode": 0/1 (0), "count_include_pad": 0/1 (0: ONNX's default; PyTorch's is 1, an
importer passes it)}. The divisor: the window's elements inside the input, or with
count_include_pad those inside the padded input, never the overhang of a ceil-mode window
past the trailing padding (PyTorch's rule)."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.pool import avgpool2d_nchw, avgpool_divisors, pool_work
from engine.ops.attrs import check_params
from engine.ops.pool_geometry import Window, window, window_starts

NAME = "avgpool2d"
ATTRS = ("kernel", "stride", "padding", "ceil_mode", "count_include_pad")
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
    """The oracle, one window (enumerated) at a time in float64: the sum of its elements
    inside the input, divided by their number, or with count_include_pad by the number of its
    positions inside the padded input [-top, H + bottom) x [-left, W + right)."""
    (x,) = xs
    win = geometry(attrs)
    (kh, kw), (sh, sw), (top, left, bottom, right) = win.kernel, win.stride, win.pads
    n, c, h, w = x.shape
    ys = window_starts(h, kh, sh, top, bottom, 1, win.ceil)
    xs_ = window_starts(w, kw, sw, left, right, 1, win.ceil)
    y = np.empty((n, c, len(ys), len(xs_)), dtype=np.float64)
    for oy, y0 in enumerate(ys):
        for ox, x0 in enumerate(xs_):
            inside = x[:, :, max(y0, 0):min(y0 + kh, h), max(x0, 0):min(x0 + kw, w)]
            if win.count_include_pad:
                count = (min(y0 + kh, h + bottom) - y0) * (min(x0 + kw, w + right) - x0)
            else:
                count = inside.shape[2] * inside.shape[3]
            y[:, :, oy, ox] = inside.astype(np.float64).sum(axis=(2, 3)) / count
    return y.astype(np.float32)


def select_kernel(backend: str) -> str:
    """The separable NumPy kernel on both backends (engine/kernels/pool.py says why)."""
    check_backend(backend)
    return "avgpool2d_nchw"


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element additions and divisions, workspace bytes) per sample: the zero-padded copy
    (when the windows reach outside the input), KH-1 additions per element of the (C, OH, WP)
    row sums, KW-1 per output and a division; those row sums (unless they are the output),
    the copy and the (OH, OW) divisor map are the workspace."""
    (in_shape,) = in_shapes
    win = geometry(attrs)
    (kh, kw) = win.kernel
    c, h, w = in_shape
    _, oh, ow = out_shape
    padded, rows, held = pool_work(c, h, w, oh, ow, win.kernel, win.stride, win.pads)
    return (padded + rows * (kh - 1) + c * oh * ow * max(kw, 2),
            4 * (padded + held + oh * ow))


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    win = geometry(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)
    (kh, kw), (sh, sw), pads = win.kernel, win.stride, win.pads
    top, left, bottom, right = pads
    sizes = {}  # (H, W) -> (OH, OW, divisor (OH, OW)), once per input size

    def prepare(shape):
        _, oh, ow = win.out_shape(NAME, shape)
        _, h, w = shape
        divisor = np.outer(avgpool_divisors(h, oh, kh, sh, top, bottom, win.count_include_pad),
                           avgpool_divisors(w, ow, kw, sw, left, right, win.count_include_pad))
        return oh, ow, divisor.astype(np.float32)

    def fn(x):
        got = sizes.get(x.shape[2:])
        if got is None:
            got = sizes[x.shape[2:]] = prepare(x.shape[1:])
        oh, ow, divisor = got
        return avgpool2d_nchw(x, oh, ow, win.kernel, win.stride, pads, divisor)
    return Kernel(name, fn)
