"""Relative indices with fillers: round trips, fillers on long gaps, rejection of bad input."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats import FormatError, relindex


@st.composite
def positions_and_size(draw):
    size = draw(st.integers(0, 5000))
    density = draw(st.sampled_from([0.0, 0.001, 0.05, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(size) < density
    return np.flatnonzero(mask).astype(np.int64), size


@given(positions_and_size(), st.integers(1, 12))
def test_roundtrip(ps, bits):
    positions, size = ps
    entries = relindex.encode_positions(positions, bits)
    assert entries.dtype == np.uint16 and entries.max(initial=0) <= (1 << bits) - 1
    np.testing.assert_array_equal(relindex.decode_positions(entries, bits, size), positions)
    np.testing.assert_array_equal(np.bincount(entries, minlength=1 << bits),
                                  relindex.histogram(positions, bits))
    assert int(np.sum(entries < (1 << bits) - 1)) == positions.size


@given(st.integers(1, 12), st.integers(0, 100_000))
def test_long_gap_uses_fillers(bits, gap):
    m = (1 << bits) - 1
    positions = np.array([gap, gap + 1])
    entries = relindex.encode_positions(positions, bits)
    assert int(np.sum(entries == m)) == gap // m
    assert entries.size == gap // m + 2
    np.testing.assert_array_equal(relindex.decode_positions(entries, bits, gap + 2), positions)


def test_empty_and_full():
    assert relindex.encode_positions(np.zeros(0, np.int64), 4).size == 0
    assert relindex.decode_positions(np.zeros(0, np.uint16), 4, 10).size == 0
    full = np.arange(1000)
    entries = relindex.encode_positions(full, 3)
    assert entries.tolist() == [0] * 1000
    np.testing.assert_array_equal(relindex.decode_positions(entries, 3, 1000), full)


def test_decode_rejects_out_of_range():
    with pytest.raises(FormatError, match="outside"):
        relindex.decode_positions(np.array([5, 5], np.uint16), 4, 11)
    with pytest.raises(FormatError, match="out of range"):
        relindex.decode_positions(np.array([16], np.uint16), 4, 100)
    with pytest.raises(FormatError, match="filler"):
        relindex.decode_positions(np.array([1, 15], np.uint16), 4, 100)
    with pytest.raises(FormatError):
        relindex.decode_positions(np.array([1], np.uint16), 0, 100)


def test_encode_rejects_unsorted_and_bad_width():
    with pytest.raises(ValueError):
        relindex.encode_positions(np.array([3, 3]), 4)
    with pytest.raises(ValueError):
        relindex.encode_positions(np.array([-1]), 4)
    with pytest.raises(ValueError):
        relindex.encode_positions(np.array([1]), 17)
