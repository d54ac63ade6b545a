"""What maxpool2d and avgpool2d share: their window attributes, read and checked, and the
output size (PyTorch/ONNX rules, engine/kernels/pool.py `pool_out_size`)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.kernels.pool import pool_out_size
from engine.ops.attrs import check_attrs, integer, padding, pair


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, int]               # (kh, kw)
    stride: tuple[int, int]               # (sh, sw); default: the kernel
    pads: tuple[int, int, int, int]       # (top, left, bottom, right)
    dilation: tuple[int, int] = (1, 1)    # max pooling only
    ceil: bool = False                    # ceil_mode
    count_include_pad: bool = False       # average pooling only

    @property
    def taps(self) -> int:
        return self.kernel[0] * self.kernel[1]

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """(OH, OW); either may be below 1 (the input is too small: see out_shape)."""
        (kh, kw), (sh, sw), (top, left, bottom, right) = self.kernel, self.stride, self.pads
        (dh, dw) = self.dilation
        return (pool_out_size(h, kh, sh, top, bottom, dh, self.ceil),
                pool_out_size(w, kw, sw, left, right, dw, self.ceil))

    def out_shape(self, op: str, in_shape: tuple) -> tuple[int, int, int]:
        """(C, H, W) -> (C, OH, OW), or ValueError naming the op."""
        if len(in_shape) != 3:
            raise ValueError(f"{op}: input must be (C, H, W) per sample, got {tuple(in_shape)}")
        c, h, w = in_shape
        oh, ow = self.out_size(h, w)
        if oh < 1 or ow < 1:
            kh, kw = self.kernel
            raise ValueError(f"{op}: input {tuple(in_shape)} with padding {list(self.pads)} is "
                             f"smaller than the {kh}x{kw} window"
                             + (f" dilated {list(self.dilation)}"
                                if self.dilation != (1, 1) else ""))
        return (c, oh, ow)


def window(op: str, attrs: dict, known: tuple[str, ...]) -> Window:
    """The checked window of a pooling node. `known` is the op's ATTRS: dilation and
    count_include_pad are read only where the op knows them (check_attrs refuses them
    elsewhere). Each padding side is below the kernel (onnxruntime's rule; PyTorch's, at most
    half the kernel, is stricter): every undilated window then holds an element of the
    input, so no average divides by zero."""
    check_attrs(op, attrs, known)
    if "kernel" not in attrs:
        raise ValueError(f"{op}: missing attr 'kernel'")
    kernel = pair(attrs["kernel"], f"{op}: kernel", 1)
    stride = pair(attrs["stride"] if "stride" in attrs else attrs["kernel"], f"{op}: stride", 1)
    pads = padding(attrs.get("padding", 0), f"{op}: padding")
    dilation = pair(attrs.get("dilation", 1), f"{op}: dilation", 1)
    ceil = bool(integer(attrs.get("ceil_mode", 0), f"{op}: ceil_mode", 0, 1))
    include = bool(integer(attrs.get("count_include_pad", 0), f"{op}: count_include_pad", 0, 1))
    top, left, bottom, right = pads
    if max(top, bottom) >= kernel[0] or max(left, right) >= kernel[1]:
        raise ValueError(f"{op}: padding {list(pads)} is not below the kernel {list(kernel)} "
                         f"on every side (a window could hold padding only)")
    return Window(kernel, stride, pads, dilation, ceil, include)


def window_starts(size: int, k: int, stride: int, pad_begin: int, pad_end: int,
                  dilation: int = 1, ceil: bool = False) -> list[int]:
    """For the oracles, independent of the kernels' closed form: the first input position of
    every window along one axis, enumerated. A window is kept when it fits in the padded
    input; in ceil mode also when it starts within a stride past the last one that fits, and
    inside the input or its leading padding (then it hangs past the end)."""
    span = (k - 1) * dilation + 1
    last_fit = size + pad_begin + pad_end - span  # the last start, padded, that fits
    starts = []
    while True:
        at = len(starts) * stride  # padded coordinates
        if not (at <= last_fit or (ceil and at < last_fit + stride and at < size + pad_begin)):
            return starts
        starts.append(at - pad_begin)
