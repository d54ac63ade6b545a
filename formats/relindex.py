"""Deep Compression's relative indices: nonzero positions as gaps of a fixed width, with fillers.

Positions are flat row-major indices into the whole tensor, strictly ascending. With width b
the filler is M = 2**b - 1: an entry e < M means "skip e zeros, then a nonzero"; an entry == M
means "skip M positions, no nonzero". Zeros after the last nonzero are implied by the size.
The entries are then Huffman-coded (formats.huffman), so a small b costs little.
"""

from __future__ import annotations

import numpy as np

from formats.errors import LayoutError


def _gaps(positions: np.ndarray) -> np.ndarray:
    positions = np.asarray(positions, dtype=np.int64).ravel()
    if positions.size == 0:
        return positions
    gaps = np.diff(positions, prepend=np.int64(-1)) - 1
    if positions[0] < 0 or gaps.min() < 0:
        raise ValueError("positions must be non-negative and strictly ascending")
    return gaps


def histogram(positions: np.ndarray, bits: int) -> np.ndarray:
    """int64 (2**bits,): how often each entry value occurs, without building the entries."""
    m = (1 << bits) - 1
    gaps = _gaps(positions)
    hist = np.bincount(gaps % m, minlength=m + 1).astype(np.int64) if gaps.size else \
        np.zeros(m + 1, dtype=np.int64)
    hist[m] += int((gaps // m).sum()) if gaps.size else 0
    return hist


def encode_positions(positions: np.ndarray, bits: int) -> np.ndarray:
    """uint16 entries for strictly ascending `positions` at width `bits` (1..16)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"relative-index width must be in 1..16, got {bits}")
    m = (1 << bits) - 1
    gaps = _gaps(positions)
    fill = gaps // m
    last = np.cumsum(fill + 1) - 1           # where each nonzero's entry lands
    entries = np.full(int(last[-1]) + 1 if gaps.size else 0, m, dtype=np.uint16)
    entries[last] = gaps % m
    return entries


def decode_positions(entries: np.ndarray, bits: int, size: int) -> np.ndarray:
    """int64 positions from entries; raises LayoutError on an entry wider than `bits`, a trailing
    filler, or a position >= size. The caller checks the count against the expected nnz."""
    if not 1 <= bits <= 16:
        raise LayoutError(f"relative-index width must be in 1..16, got {bits}")
    m = (1 << bits) - 1
    entries = np.asarray(entries).astype(np.int64, copy=False).ravel()
    if entries.size == 0:
        return np.zeros(0, dtype=np.int64)
    if entries.min() < 0 or entries.max() > m:
        raise LayoutError(f"relative index out of range 0..{m}")
    if entries[-1] == m:
        raise LayoutError("relative-index stream ends with a filler")
    real = entries < m
    step = np.where(real, entries + 1, m)
    positions = np.cumsum(step)[real] - 1
    if positions[-1] >= size:
        raise LayoutError(f"position {int(positions[-1])} outside a tensor of {size} elements")
    return positions
