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
    # far more bytes than the symbols can fill: refused before any decoding
    with pytest.raises(FormatError, match="stray bytes: 1000000 bytes for 10 symbols of at most"):
        huffman.decode(b"\0" * 10**6, lengths, 10)


def test_unassigned_code_raises():
    lengths = np.array([1, 0, 2], dtype=np.uint8)  # codes 0, 10; 11 is unassigned
    with pytest.raises(FormatError, match="unassigned"):
        huffman.decode(b"\xff", lengths, 2)
    with pytest.raises(FormatError):
        huffman.decode_ref(b"\xff", lengths, 2)


def test_no_symbols_in_table_raises():
    with pytest.raises(FormatError):
        huffman.decode(b"\0", np.zeros(4, np.uint8), 1)


def oracle(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray | None:
    """What `decode` must return: the bit-by-bit parse, or None (an error) if that fails or
    leaves whole bytes after the last symbol (the reference itself ignores them)."""
    try:
        ref = huffman.decode_ref(data, lengths, count)
    except FormatError:
        return None
    used = int(np.asarray(lengths, dtype=np.int64)[ref].sum())
    return ref if (used + 7) // 8 == len(data) else None


def random_code(rng: np.random.Generator) -> np.ndarray:
    """Code lengths of 1..40 symbols up to 2..MAX_CODE_LEN bits: an optimal code for random
    counts (complete), or the same with some symbols dropped (incomplete)."""
    top = int(rng.choice([2, 4, 8, 16, 17, 20, MAX_CODE_LEN]))
    k = int(rng.integers(1, min(40, 1 << top) + 1))
    lengths = huffman.code_lengths(rng.integers(0, 1000, k) ** 3 + 1, top)
    if rng.random() < 0.5:
        drop = rng.random(k) < 0.3
        drop[rng.integers(k)] = False  # keep at least one symbol
        lengths[drop] = 0
    return lengths


def test_decode_matches_the_oracle_on_damaged_and_hostile_streams():
    """Seeded draws of a code and a stream for it: valid, valid with bits flipped, cut or
    padded, and periodic (whose lanes may never fall into step). `decode` must equal the
    bit-by-bit oracle or refuse exactly when it does; most draws must get as far as comparing
    symbols (a test that mostly compares two errors says little)."""
    rng = np.random.default_rng(20240601)
    draws, compared = 300, 0
    for _ in range(draws):
        lengths = random_code(rng)
        used = np.flatnonzero(lengths)
        kind = rng.choice(4, p=[0.3, 0.25, 0.3, 0.15])  # valid, flipped, periodic, faulty
        if kind == 2:  # a periodic stream: a head, then one unit again and again
            unit = rng.choice(used, int(rng.integers(1, 4)))
            symbols = np.concatenate([rng.choice(used, int(rng.integers(0, 3))),
                                      np.tile(unit, int(rng.integers(1, 800)))])
        else:
            symbols = rng.choice(used, int(rng.integers(1, 1000)))
        data = bytearray(huffman.encode(symbols, lengths))
        count = symbols.size
        if kind == 1:  # flip a few bits
            for _ in range(int(rng.integers(1, 4))):
                data[int(rng.integers(len(data)))] ^= 1 << int(rng.integers(8))
        elif kind == 3:  # cut, pad or miscount
            fault = rng.integers(0, 3)
            if fault == 0:
                data = data[:int(rng.integers(len(data)))] or bytearray(b"\0")
            elif fault == 1:
                data += rng.bytes(int(rng.integers(1, 4)))
            else:
                count += int(rng.integers(-count + 1, 4))
        data = bytes(data)
        want = oracle(data, lengths, count)
        try:
            got = huffman.decode(data, lengths, count)
        except FormatError:
            got = None
        if want is None:
            assert got is None, (lengths.tolist(), count, data.hex())
        else:
            assert got is not None, (lengths.tolist(), count, data.hex())
            np.testing.assert_array_equal(got, want)
            compared += 1
    assert compared >= draws // 2, f"only {compared} of {draws} draws compared symbols"


@pytest.mark.parametrize("lengths, head, unit", [
    ((1, 2, 2), [], [2]),            # 11 11 ...: from an odd bit, 11 11 ... one bit off
    ((1, 2, 2), [0], [2]),           # 0 11 11 ...: the true parse is on odd bits now
    ((2, 2, 2, 3, 4), [3], [2, 2]),  # 110 10 10 ...: 01 01 ... one bit off, forever
    ((3, 5), [], [1]),               # 00100 ...: every other phase meets an unassigned code
    (tuple(range(1, 24)) + (24, 24), [], [24]),  # 24 ones, again and again: 24 phases
])
def test_periodic_streams_whose_lanes_never_fall_into_step(lengths, head, unit):
    """Streams whose parses from different bit offsets never meet (Huffman codes' usual
    self-synchronisation fails), so the decoder's lanes never agree with the true parse on
    their own: decode must still be exact. (How fast: docs/FORMAT.md, "Decode speed".)"""
    lengths = np.array(lengths, dtype=np.uint8)
    symbols = np.array(head + unit * (40_000 // sum(int(lengths[u]) for u in unit)))
    data = huffman.encode(symbols, lengths)
    np.testing.assert_array_equal(huffman.decode(data, lengths, symbols.size), symbols)
    np.testing.assert_array_equal(huffman.decode_ref(data, lengths, symbols.size), symbols)


@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3, 5, 64, 1000]))
def test_many_lanes_match_oracle(seed, k):
    rng = np.random.default_rng(seed)
    p = rng.random(k) ** 4
    symbols = rng.choice(k, size=20000, p=p / p.sum())
    data = roundtrip(symbols, k)
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=k))
    np.testing.assert_array_equal(huffman.decode_ref(data, lengths, symbols.size), symbols)
