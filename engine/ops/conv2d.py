"""conv2d: NCHW convolution, PyTorch conventions. attrs {"stride": [sh, sw], "padding": [ph, pw]}
(ints accepted); params weight (O, C, KH, KW), bias (O,) optional."""

from __future__ import annotations

import numpy as np

from engine.kernels import Kernel, check_backend, csr_codebook_arrays, dense_bias, weight_info
from engine.kernels.dense import conv2d_nchw_csr_scipy, conv2d_nchw_im2col, pair, to_scipy_csr
from engine.kernels.sparse import (
    conv2d_nchw_csr_codebook,
    conv2d_tap_offsets,
    conv_out_size,
)
from formats import CodebookTensor

NAME = "conv2d"


def geometry(attrs: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    """((sh, sw), (ph, pw)) from attrs; groups and dilation other than 1 are refused."""
    for key in ("groups", "dilation"):
        if key in attrs and pair(attrs[key], key) != (1, 1):
            raise ValueError(f"conv2d: {key}={attrs[key]!r} not supported (only 1)")
    stride, pad = pair(attrs.get("stride", 1), "stride"), pair(attrs.get("padding", 0), "padding")
    if min(stride) < 1 or min(pad) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride {stride} "
                         f"padding {pad}")
    return stride, pad


def infer_shape(attrs: dict, in_shape: tuple, params: dict[str, tuple]) -> tuple:
    """(C, H, W) -> (O, OH, OW)."""
    (sh, sw), (ph, pw) = geometry(attrs)
    if "weight" not in params:
        raise ValueError("conv2d: missing param 'weight'")
    wshape = tuple(params["weight"])
    if len(wshape) != 4:
        raise ValueError(f"conv2d: weight must be (O, C, KH, KW), got {wshape}")
    o, c, kh, kw = wshape
    if len(in_shape) != 3:
        raise ValueError(f"conv2d: input must be (C, H, W) per sample, got {tuple(in_shape)}")
    if in_shape[0] != c:
        raise ValueError(f"conv2d: input has {in_shape[0]} channels, weight {wshape} expects {c}")
    if "bias" in params and params["bias"] is not None and tuple(params["bias"]) != (o,):
        raise ValueError(f"conv2d: bias must be ({o},), got {tuple(params['bias'])}")
    oh, ow = conv_out_size(in_shape[1], kh, sh, ph), conv_out_size(in_shape[2], kw, sw, pw)
    if oh < 1 or ow < 1:
        raise ValueError(f"conv2d: input {tuple(in_shape)} with padding ({ph}, {pw}) is "
                         f"smaller than the {kh}x{kw} kernel")
    return (o, oh, ow)


def reference(x: np.ndarray, attrs: dict, params: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: one einsum per kernel tap over a strided view of the padded input."""
    (sh, sw), (ph, pw) = geometry(attrs)
    w = np.asarray(params["weight"], dtype=np.float32)
    o, c, kh, kw = w.shape
    n, _, h, wd = x.shape
    oh, ow = conv_out_size(h, kh, sh, ph), conv_out_size(wd, kw, sw, pw)
    xp = np.pad(np.asarray(x, np.float32), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    y = np.zeros((n, o, oh, ow), dtype=np.float32)
    for ky in range(kh):
        for kx in range(kw):
            tap = xp[:, :, ky:ky + sh * (oh - 1) + 1:sh, kx:kx + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,oc->nohw", tap, w[:, :, ky, kx])
    if params.get("bias") is not None:
        y += np.asarray(params["bias"], np.float32)[:, None, None]
    return y


def select_kernel(weight, backend: str) -> str:
    """The kernel build() uses for this weight on this backend (a planner logs this)."""
    check_backend(backend)
    if not isinstance(weight, CodebookTensor):
        return "conv2d_nchw_im2col"
    return "conv2d_nchw_csr_codebook" if backend == "numba" else "conv2d_nchw_csr_scipy"


def build(attrs: dict, params: dict, backend: str) -> Kernel:
    (sh, sw), (ph, pw) = geometry(attrs)
    weight = params["weight"]
    if len(weight.shape) != 4:
        raise ValueError(f"conv2d: weight must be (O, C, KH, KW), got {tuple(weight.shape)}")
    o, c, kh, kw = (int(s) for s in weight.shape)
    bias = dense_bias(params.get("bias"))
    name = select_kernel(weight, backend)

    if name == "conv2d_nchw_im2col":
        w = np.ascontiguousarray(weight, dtype=np.float32)

        def fn(x):
            return conv2d_nchw_im2col(x, w, bias, (sh, sw), (ph, pw))
    elif name == "conv2d_nchw_csr_scipy":
        csr = to_scipy_csr(weight.indptr, weight.indices, weight.values(), (o, c * kh * kw))

        def fn(x):
            return conv2d_nchw_csr_scipy(x, csr, bias, kh, kw, (sh, sw), (ph, pw))
    else:
        indptr, indices, codes, table = csr_codebook_arrays(weight)
        taps = {}  # (H, W) of the input -> tap offsets; a model sees one size, so one entry

        def fn(x):
            hw = x.shape[-2:]
            if hw not in taps:
                taps[hw] = conv2d_tap_offsets(indices, kh, kw, hw[0] + 2 * ph, hw[1] + 2 * pw)
            return conv2d_nchw_csr_codebook(x, indptr, indices, codes, table, bias,
                                            kh, kw, sh, sw, ph, pw, check=False,
                                            tap_offsets=taps[hw])
    return Kernel(name, fn, weight_info(weight))
