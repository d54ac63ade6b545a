"""Pruning masks, the pruning schedule, and k-means weight sharing."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from compress.pack import code_bits
from compress.prune import geometric_schedule, magnitude_mask
from compress.quantize import cluster_weight, kmeans_1d

finite = st.floats(-10, 10, allow_nan=False, width=32)


@given(arrays(np.float32, st.integers(1, 300), elements=finite), st.floats(0, 1))
def test_mask_keeps_the_largest_magnitudes(w, density):
    mask = magnitude_mask(w, density)
    assert mask.sum() == round(density * w.size)
    if 0 < mask.sum() < w.size:
        assert np.abs(w[mask]).min() >= np.abs(w[~mask]).max()


@given(arrays(np.float32, 200, elements=finite), st.floats(0, 1), st.floats(0, 1))
def test_pruned_weights_stay_pruned(w, d1, d2):
    first = magnitude_mask(w, max(d1, d2))
    second = magnitude_mask(np.where(first, w, 0), min(d1, d2), first)
    assert not np.any(second & ~first)


def test_geometric_schedule_ends_at_target():
    s = geometric_schedule(0.04, 4)
    assert len(s) == 4 and np.isclose(s[-1], 0.04)
    assert all(a > b for a, b in zip(s, s[1:], strict=False))
    assert np.allclose(np.diff(np.log(s)), np.log(0.04) / 4)


@given(arrays(np.float64, st.integers(1, 500), elements=st.floats(-1, 1)), st.integers(1, 6))
def test_kmeans_assigns_each_value_its_nearest_used_centroid(v, bits):
    centroids, codes = kmeans_1d(v, 2**bits)
    assert centroids.size <= 2**bits and codes.shape == v.shape
    assert set(np.unique(codes)) == set(range(centroids.size))  # empty clusters dropped
    dist = np.abs(v[:, None] - centroids[None, :].astype(np.float64))
    # float32 centroids: a tie can flip by one rounding step
    assert np.all(dist[np.arange(v.size), codes] <= dist.min(axis=1) + 1e-6)


def test_kmeans_linear_init_keeps_rare_large_weights():
    # Linear init spreads centroids over [min, max], so the few large weights keep a centroid
    # of their own instead of being pulled into the bulk near zero (the paper's argument).
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0, 0.05, 2000), [1.5, 1.52, -1.4]])
    centroids, codes = kmeans_1d(v, 16)
    assert np.abs(centroids[codes] - v)[-3:].max() < 0.05
    grid = np.linspace(v.min(), v.max(), 16)  # the initial centroids: Lloyd only improves them
    grid_sse = (np.abs(v[:, None] - grid[None]).min(axis=1) ** 2).sum()
    assert ((centroids[codes] - v) ** 2).sum() <= grid_sse


def test_cluster_weight_keeps_pruned_positions_out():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 16)).astype(np.float32)
    mask = magnitude_mask(w, 0.25)
    codes, centroids = cluster_weight(w, mask, 3)
    assert np.all((codes >= 0) == mask)
    assert centroids.size <= 8 and code_bits(centroids.size) <= 3
    error = np.abs(np.where(mask, centroids[np.maximum(codes, 0)], 0) - np.where(mask, w, 0))
    assert error.max() < (w.max() - w.min()) / 4


def test_code_bits():
    assert [code_bits(k) for k in (1, 2, 3, 4, 5, 16, 17, 256)] == [1, 1, 2, 2, 3, 4, 5, 8]
