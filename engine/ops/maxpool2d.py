"""maxpool2d: NCHW max pooling, PyTorch floor mode.
attrs {"kernel": [kh, kw], "stride": [sh, sw] (defaults to kernel), "padding": [ph, pw]}."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend
from engine.kernels.dense import maxpool2d_nchw, pair
from engine.kernels.sparse import conv_out_size

NAME = "maxpool2d"


def geometry(attrs: dict):
    """((kh, kw), (sh, sw), (ph, pw)) with PyTorch's rule that padding <= kernel / 2."""
    if "kernel" not in attrs:
        raise ValueError("maxpool2d: missing attr 'kernel'")
    k = pair(attrs["kernel"], "kernel")
    s = pair(attrs.get("stride") or attrs["kernel"], "stride")
    p = pair(attrs.get("padding", 0), "padding")
    if min(k) < 1 or min(s) < 1 or min(p) < 0 or p[0] * 2 > k[0] or p[1] * 2 > k[1]:
        raise ValueError(f"maxpool2d: need kernel >= 1, stride >= 1, 0 <= padding <= kernel/2; "
                         f"got kernel {k} stride {s} padding {p}")
    return k, s, p


def infer_shape(attrs: dict, in_shape: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (C, OH, OW)."""
    (kh, kw), (sh, sw), (ph, pw) = geometry(attrs)
    if len(in_shape) != 3:
        raise ValueError(f"maxpool2d: input must be (C, H, W) per sample, got "
                         f"{tuple(in_shape)}")
    c, h, w = in_shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"maxpool2d: input {tuple(in_shape)} is smaller than the "
                         f"{kh}x{kw} window")
    return (c, oh, ow)


def reference(x: np.ndarray, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: a running maximum over the window taps."""
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


def select_kernel(backend: str) -> str:
    check_backend(backend)
    return "maxpool2d_nchw"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    k, s, p = geometry(attrs)
    name = select_kernel(backend)

    def fn(x):
        return maxpool2d_nchw(x, k, s, p)
    return Kernel(name, fn)
