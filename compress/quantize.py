"""Weight sharing by k-means (Han et al., "Deep Compression", 2016, section 3).

Per layer, the surviving (nonzero) weights are clustered into 2**bits shared values. The paper
found linear initialisation over [min, max] best: it keeps the few large weights, which matter
most, represented, where density-based initialisation would pull every centroid to the bulk
near zero. Pruned positions take no code and stay exactly zero.
"""

from __future__ import annotations

import numpy as np


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means on scalars with linear initialisation.

    Returns (centroids float32 (K',), codes intp (n,)) with K' <= k: clusters that end empty
    are dropped and the codes renumbered, so every centroid is used.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        return np.zeros(1, np.float32), np.zeros(0, np.intp)
    lo, hi = float(v.min()), float(v.max())
    centroids = np.linspace(lo, hi, k) if hi > lo else np.array([lo])
    for _ in range(iterations):
        codes = _nearest(v, centroids)
        sums = np.bincount(codes, weights=v, minlength=centroids.size)
        counts = np.bincount(codes, minlength=centroids.size)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(moved, centroids, rtol=0, atol=1e-9 * max(abs(lo), abs(hi), 1e-30)):
            centroids = moved
            break
        centroids = moved
    codes = _nearest(v, centroids)
    used = np.unique(codes)
    remap = np.full(centroids.size, -1, np.intp)
    remap[used] = np.arange(used.size)
    return centroids[used].astype(np.float32), remap[codes]


def _nearest(v: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for each value (centroids ascending)."""
    order = np.argsort(centroids, kind="stable")
    sorted_c = centroids[order]
    mids = (sorted_c[1:] + sorted_c[:-1]) / 2
    return order[np.searchsorted(mids, v)]


def cluster_weight(weight: np.ndarray, mask: np.ndarray | None,
                   bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Quantize one layer: -> (codes int32 of weight's shape with -1 where pruned, centroids)."""
    if not 1 <= bits <= 16:
        raise ValueError(f"bits must be in 1..16, got {bits}")
    keep = np.ones(weight.shape, bool) if mask is None else mask.astype(bool)
    centroids, codes = kmeans_1d(weight[keep], 2**bits)
    dense_codes = np.full(weight.shape, -1, dtype=np.int32)
    dense_codes[keep] = codes
    return dense_codes, centroids
