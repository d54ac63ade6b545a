"""Canonical Huffman: round trips against the bit-by-bit oracle, Kraft, size, bad streams."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from formats import FormatError, huffman
from formats.constants import MAX_CODE_LEN


def kraft(lengths: np.ndarray, max_len: int = MAX_CODE_LEN) -> int:
    used = lengths[lengths > 0].astype(np.int64)
    return int(np.sum(np.int64(1) << (max_len - used)))


def roundtrip(symbols: np.ndarray, alphabet: int, max_len: int = MAX_CODE_LEN) -> bytes:
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet), max_len)
    assert lengths.dtype == np.uint8 and lengths.max(initial=0) <= max_len
    assert kraft(lengths) <= 1 << MAX_CODE_LEN
    data = huffman.encode(symbols, lengths)
    out = huffman.decode(data, lengths, symbols.size)
    np.testing.assert_array_equal(out, symbols)
    return data


@given(st.lists(st.integers(0, 300), max_size=400))
def test_roundtrip_matches_oracle(values):
    symbols = np.array(values, dtype=np.int64)
    data = roundtrip(symbols, 301)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=301))
    np.testing.assert_array_equal(huffman.decode_ref(data, lengths, symbols.size), symbols)


@given(st.integers(0, 65535), st.integers(1, 5000))
def test_one_symbol_gets_length_one(symbol, n):
    symbols = np.full(n, symbol)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=65536))
    assert lengths[symbol] == 1 and lengths.sum() == 1
    assert len(roundtrip(symbols, 65536)) == (n + 7) // 8


def test_empty():
    assert huffman.code_lengths(np.zeros(4, dtype=np.int64)).sum() == 0
    assert huffman.encode(np.zeros(0, dtype=np.int64), np.zeros(4, np.uint8)) == b""
    assert huffman.decode(b"", np.zeros(4, np.uint8), 0).size == 0


@given(st.integers(1, 16), st.integers(0, 2**32 - 1), st.floats(0.5, 30))
def test_skewed_and_uniform(bits, seed, temp):
    rng = np.random.default_rng(seed)
    k = 1 << bits
    p = np.exp(-np.arange(k) / temp)
    n = 3000
    roundtrip(rng.choice(k, size=n, p=p / p.sum()), k)
    roundtrip(rng.integers(0, k, n), k)


def test_full_16_bit_alphabet():
    symbols = np.concatenate([np.arange(65536), np.zeros(100000, dtype=np.int64)])
    roundtrip(np.random.default_rng(1).permutation(symbols), 65536)


@given(st.integers(10, 40), st.integers(12, 24))
def test_length_limit_on_fibonacci_frequencies(n, max_len):
    fib = [1, 1]
    while len(fib) < n:
        fib.append(fib[-1] + fib[-2])
    freqs = np.array(fib, dtype=np.int64)
    lengths = huffman.code_lengths(freqs, max_len)
    assert lengths.max() <= max_len and kraft(lengths) <= 1 << MAX_CODE_LEN
    symbols = np.repeat(np.arange(n), np.minimum(freqs, 50))
    data = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(data, lengths, symbols.size), symbols)


def test_size_close_to_entropy():
    rng = np.random.default_rng(0)
    p = np.exp(-np.arange(256) / 12.0)
    symbols = rng.choice(256, size=200_000, p=p / p.sum())
    freqs = np.bincount(symbols, minlength=256)
    q = freqs[freqs > 0] / symbols.size
    entropy_bits = -np.sum(q * np.log2(q)) * symbols.size
    data = roundtrip(symbols, 256)
    assert 8 * len(data) <= entropy_bits * 1.02 + 8


def test_canonical_codes_are_prefix_free_and_ordered():
    lengths = np.array([3, 3, 3, 3, 3, 2, 4, 4], dtype=np.uint8)
    codes = huffman.canonical_codes(lengths)
    assert codes.tolist() == [2, 3, 4, 5, 6, 0, 14, 15]


def test_over_subscribed_lengths_raise():
    with pytest.raises(FormatError, match="over-subscribed"):
        huffman.check_lengths(np.array([1, 1, 1], dtype=np.uint8))
    with pytest.raises(FormatError):
        huffman.decode(b"\x00", np.array([1, 1, 2], dtype=np.uint8), 1)
    with pytest.raises(FormatError, match="exceeds"):
        huffman.check_lengths(np.array([30, 1], dtype=np.uint8))


def test_stream_running_out_raises():
    symbols = np.arange(8).repeat(10)
    lengths = huffman.code_lengths(np.bincount(symbols))
    data = huffman.encode(symbols, lengths)
    with pytest.raises(FormatError):
        huffman.decode(data[:-1], lengths, symbols.size)
    with pytest.raises(FormatError):
        huffman.decode(data, lengths, symbols.size + 1)
    with pytest.raises(FormatError):  # claims far more symbols than bits
        huffman.decode(data, lengths, 10**12)
    with pytest.raises(FormatError, match="stray"):
        huffman.decode(data + b"\0", lengths, symbols.size)


def test_unassigned_code_raises():
    lengths = np.array([1, 0, 2], dtype=np.uint8)  # codes 0, 10; 11 is unassigned
    with pytest.raises(FormatError, match="unassigned"):
        huffman.decode(b"\xff", lengths, 2)
    with pytest.raises(FormatError):
        huffman.decode_ref(b"\xff", lengths, 2)


def test_no_symbols_in_table_raises():
    with pytest.raises(FormatError):
        huffman.decode(b"\0", np.zeros(4, np.uint8), 1)


@given(st.binary(min_size=1, max_size=3000), st.integers(1, 4000))
def test_random_bytes_decode_or_raise_like_the_oracle(data, count):
    """Any byte string parses exactly as the bit-by-bit oracle parses it (many lanes, so the
    fix-up between lanes is exercised), or both refuse it."""
    lengths = np.array([2, 3, 3, 3, 4, 4, 0, 7], dtype=np.uint8)  # incomplete: Kraft < 1
    try:
        ref = huffman.decode_ref(data, lengths, count)
    except FormatError:
        ref = None
    try:
        out = huffman.decode(data, lengths, count)
    except FormatError:
        out = None
    if ref is None:
        assert out is None
    elif out is not None:  # the fast decoder also refuses stray bytes the oracle ignores
        np.testing.assert_array_equal(out, ref)


@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3, 5, 64, 1000]))
def test_many_lanes_match_oracle(seed, k):
    rng = np.random.default_rng(seed)
    p = rng.random(k) ** 4
    symbols = rng.choice(k, size=20000, p=p / p.sum())
    data = roundtrip(symbols, k)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    np.testing.assert_array_equal(huffman.decode_ref(data, lengths, symbols.size), symbols)
