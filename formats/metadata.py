"""The metadata section's JSON: inflated, measured and parsed within fixed bounds.

`json.loads` is fast but trusting: 4 MiB of `[[],[],...]` builds 1.4 million lists (90 MiB),
and how deep it may nest depends on how deep the caller's stack already is (the same file
parsed or refused depending on where it was opened from). So the text is measured first, in
O(n) C and NumPy work (`json_shape`), and refused past MAX_METADATA_DEPTH levels or
MAX_METADATA_VALUES values, before any object is built.
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np

from formats.constants import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_METADATA_VALUES
from formats.errors import LayoutError


def inflate(data: bytes) -> bytes:
    """Inflate zlib-compressed metadata, stopping at the size limit (no zip bombs)."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(data, MAX_METADATA_BYTES + 1)
    except zlib.error as e:
        raise LayoutError(f"metadata is not a valid zlib stream ({e})") from None
    if len(raw) > MAX_METADATA_BYTES or d.unconsumed_tail:
        raise LayoutError(f"metadata inflates past the limit of {MAX_METADATA_BYTES} bytes")
    if not d.eof or d.unused_data:
        raise LayoutError("metadata zlib stream is incomplete or followed by extra bytes")
    return raw


def json_shape(text: bytes) -> tuple[int, int]:
    """(values, depth) of JSON text, read without parsing it; values counts containers and
    separators, an upper bound of the values json.loads would build.

    Escapes go first, left to right as JSON reads them: every backslash pair, then every
    escaped quote, becomes two plain bytes, so the quotes left delimit the strings and the
    brackets and commas outside them are the structure. Text that is not JSON may be
    miscounted, but only after the first place where json.loads itself stops with an error.
    """
    plain = text.replace(b"\\\\", b"__").replace(b'\\"', b"__")
    b = np.frombuffer(plain, dtype=np.uint8)
    outside = ~np.logical_xor.accumulate(b == 0x22)  # each quote flips in/out of a string
    opens = ((b == 0x5B) | (b == 0x7B)) & outside
    step = opens.view(np.int8) - (((b == 0x5D) | (b == 0x7D)) & outside).view(np.int8)
    depth, level = 0, 0
    for i in range(0, step.size, 1 << 20):  # the running depth, a MiB at a time
        run = np.cumsum(step[i:i + (1 << 20)], dtype=np.int32) + level
        depth, level = max(depth, int(run.max())), int(run[-1])
    values = int(np.count_nonzero(opens)) + int(np.count_nonzero((b == 0x2C) & outside)) + 1
    return values, depth


def check_shape(text: bytes) -> None:
    """LayoutError if the text nests deeper or holds more values than a reader accepts."""
    values, depth = json_shape(text)
    if depth > MAX_METADATA_DEPTH:
        raise LayoutError(f"metadata JSON nests {depth} levels deep, over the limit of "
                          f"{MAX_METADATA_DEPTH}")
    if values > MAX_METADATA_VALUES:
        raise LayoutError(f"metadata JSON holds about {values:,} values, over the limit of "
                          f"{MAX_METADATA_VALUES:,}")


class _NonFinite(ValueError):
    pass


def _no_constant(name: str):
    """json.loads calls this for NaN, Infinity and -Infinity, which the spec forbids."""
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # e.g. 1e999, which float() turns into inf
        raise _NonFinite(text)
    return value


def parse(text: bytes):
    """The JSON value of `text` (UTF-8), within the limits above; LayoutError otherwise."""
    check_shape(text)
    try:
        return json.loads(text.decode("utf-8"), parse_constant=_no_constant,
                          parse_float=_finite_float)
    except _NonFinite:
        raise LayoutError("metadata JSON holds NaN/Infinity (forbidden by the spec)") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise LayoutError(f"metadata is not valid UTF-8 JSON ({type(e).__name__})") from None
