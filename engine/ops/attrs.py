"""Checking what a file says about a node: its attributes and parameter roles.

Every op names the attributes and parameter roles it knows; anything else is refused, listing
them, because an attribute an op ignores (a max pool's `ceil_mode`, a conv's `groups`) would
silently run the layer wrong, and an older engine must not misrun a newer file. Integers come
from an untrusted file too: bools, floats and values past MAX_INT are refused before any of
them reaches a kernel (a stride of 10**20 must not reach Numba's int64 arithmetic).
"""

from __future__ import annotations

import numpy as np

# Geometry (kernel, stride, padding, dilation) above this is refused: far beyond any real
# network, and small enough that offsets computed from it never overflow int64.
MAX_INT = 1 << 24


def check_attrs(op: str, attrs: dict, known: tuple[str, ...]) -> None:
    if not isinstance(attrs, dict):
        raise ValueError(f"{op}: attributes must be an object, got {type(attrs).__name__}")
    unknown = sorted(str(k) for k in attrs if k not in known)
    if unknown:
        raise ValueError(f"{op}: unknown attribute(s) {', '.join(map(repr, unknown))}; "
                         f"{op} knows {', '.join(known) if known else 'none'}")


def check_params(op: str, params: dict, required: tuple[str, ...],
                 optional: tuple[str, ...] = ()) -> None:
    unknown = sorted(str(r) for r in params if r not in required + optional)
    if unknown:
        known = required + optional
        raise ValueError(f"{op}: unknown parameter role(s) {', '.join(map(repr, unknown))}; "
                         f"{op} takes {', '.join(known) if known else 'no parameters'}")
    missing = [r for r in required if params.get(r) is None]
    if missing:
        raise ValueError(f"{op}: missing parameter(s) {', '.join(missing)}")


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def integer(v, what: str, lo: int, hi: int = MAX_INT) -> int:
    """An int in lo..hi (a bool or a float is not an int here)."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise ValueError(f"{what}={_short(int(v))} outside {lo}..{hi}")
    return int(v)


def number(v, what: str) -> float:
    """A finite JSON number as a float (a 4,000-digit int or a bool is not one)."""
    try:
        ok = (not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.number))
              and np.isfinite(float(v)))
    except OverflowError:
        ok = False
    if not ok:
        raise ValueError(f"{what} must be a finite number, got {_short(v)}")
    return float(v)


def padding(v, what: str) -> tuple[int, int, int, int]:
    """2-d padding as (top, left, bottom, right): an int, [ph, pw] (both sides), or
    [top, left, bottom, right] (ONNX's pads order for two spatial dims)."""
    if isinstance(v, (list, tuple)) and len(v) == 4:
        top, left, bottom, right = (integer(p, what, 0) for p in v)
        return top, left, bottom, right
    ph, pw = pair(v, what, 0)
    return ph, pw, ph, pw


def inputs(op: str, in_shapes: tuple, lo: int, hi: int) -> None:
    """The number of input values an op reads is within lo..hi."""
    if not lo <= len(in_shapes) <= hi:
        want = str(lo) if lo == hi else f"{lo} to {hi}"
        raise ValueError(f"{op} reads {want} input value(s), the node gives {len(in_shapes)}")


def pair(v, what: str, lo: int, hi: int = MAX_INT) -> tuple[int, int]:
    """An int or a list of two ints, each in lo..hi -> (a, b)."""
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"{what} must be an int or a pair of ints, got {_short(v)}")
        return integer(v[0], what, lo, hi), integer(v[1], what, lo, hi)
    a = integer(v, what, lo, hi)
    return a, a
