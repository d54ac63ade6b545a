"""maxpool2d: NCHW max pooling, PyTorch floor mode.
attrs {"kernel": [kh, kw], "stride": [sh, sw] (defaults to kernel), "padding": [ph, pw]}."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.dense import maxpool2d_nchw
from engine.kernels.sparse import conv_out_size
from engine.ops.attrs import check_attrs, check_params, pair

NAME = "maxpool2d"
ATTRS = ("kernel", "stride", "padding")
INPUTS = (1, 1)  # input values read


def geometry(attrs: dict):
    """((kh, kw), (sh, sw), (ph, pw)) with PyTorch's rule that padding <= kernel / 2."""
    check_attrs(NAME, attrs, ATTRS)
    if "kernel" not in attrs:
        raise ValueError("maxpool2d: missing attr 'kernel'")
    k = pair(attrs["kernel"], "maxpool2d: kernel", 1)
    s = pair(attrs["stride"] if "stride" in attrs else attrs["kernel"], "maxpool2d: stride", 1)
    p = pair(attrs.get("padding", 0), "maxpool2d: padding", 0)
    if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"maxpool2d: padding {p} is more than half the kernel {k}")
    return k, s, p


def infer_shape(attrs: dict, in_shapes: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (C, OH, OW)."""
    (in_shape,) = in_shapes
    (kh, kw), (sh, sw), (ph, pw) = geometry(attrs)
    check_params(NAME, params, ())
    if len(in_shape) != 3:
        raise ValueError(f"maxpool2d: input must be (C, H, W) per sample, got "
                         f"{tuple(in_shape)}")
    c, h, w = in_shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"maxpool2d: input {tuple(in_shape)} is smaller than the "
                         f"{kh}x{kw} window")
    return (c, oh, ow)


def reference(xs: list, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: a running maximum over the window taps."""
    (x,) = xs
    (kh, kw), (sh, sw), (ph, pw) = geometry(attrs)
    n, c, h, w = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            np.maximum(y, xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw],
                       out=y)
    return y


def cost(attrs: dict, in_shapes: tuple, out_shape: tuple, params: dict, backend: str):
    """(element maxima, workspace bytes) per sample: the padded copy and, for a large window,
    the row-pooled intermediate (C, HP, OW)."""
    (in_shape,) = in_shapes
    (kh, kw), _, (ph, pw) = geometry(attrs)
    c, h, w = in_shape
    _, oh, ow = out_shape
    padded = c * (h + 2 * ph) * (w + 2 * pw) if ph or pw else 0
    if kh * kw <= 9:
        return c * oh * ow * kh * kw, 4 * padded
    rows = c * (h + 2 * ph) * ow
    return rows * kw + c * oh * ow * kh, 4 * (padded + rows)


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "maxpool2d_nchw"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    k, s, p = geometry(attrs)
    check_params(NAME, params, ())
    name = select_kernel(backend)

    def fn(x):
        return maxpool2d_nchw(x, k, s, p)
    return Kernel(name, fn)
