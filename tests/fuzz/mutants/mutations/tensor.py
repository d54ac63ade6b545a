"""Mutations of tensor sections: header fields, dims, codebook head fields, streams, Huffman
length tables, codebook floats, dense data, whole tensors re-encoded or re-coded, and byte
damage inside a section (its CRC fixed)."""

from __future__ import annotations

import math

import numpy as np

from formats import constants as C
from formats.tensors import from_dense_codes
from formats.writer import encode_tensor
from tests.fuzz.mutants.mutations.edits import (
    INF,
    NAN,
    Mutation,
    bounded,
    floats,
    interesting_int,
    mutate_bytes,
    noop,
    pick_sec,
    tensor_items,
)
from tests.fuzz.mutants.sections import RawSec, parse_tensor_section


def m_dim(d, spec, case):
    s = pick_sec(d, spec)
    if s is None or not s.dims:
        return noop(d, spec, case)
    i = d.int(0, len(s.dims) - 1)
    old = s.dims[i]
    s.dims[i] = interesting_int(d, 64, old)
    return f"{s.text_name}: dims[{i}] {old} -> {s.dims[i]}", False, False


def m_dims_permute(d, spec, case):
    s = pick_sec(d, spec)
    if s is None or len(s.dims) < 2:
        return noop(d, spec, case)
    i, j = d.int(0, len(s.dims) - 1), d.int(0, len(s.dims) - 1)
    s.dims[i], s.dims[j] = s.dims[j], s.dims[i]
    return f"{s.text_name}: swap dims {i} and {j} -> {s.dims}", False, False


def _factor(d, n: int, parts: int) -> list[int]:
    dims = [1] * parts
    p, f = n, 2
    primes = []
    while p > 1 and f * f <= p:
        while p % f == 0:
            primes.append(f)
            p //= f
        f += 1
    if p > 1:
        primes.append(p)
    for q in primes:
        dims[d.int(0, parts - 1)] *= q
    return dims


def m_dims_reshape(d, spec, case):
    s = pick_sec(d, spec)
    if s is None or not s.dims:
        return noop(d, spec, case)
    size = math.prod(s.dims)
    if size > 1 << 40:  # trial division of a mutated, huge size would take forever
        raise ValueError("size too large to factor")
    old = list(s.dims)
    s.dims = _factor(d, size, d.int(1 if s.body == "dense" else 1, 5))
    return f"{s.text_name}: reshape {old} -> {s.dims}", False, False


def m_ndim(d, spec, case):
    s = pick_sec(d, spec)
    if s is None:
        return noop(d, spec, case)
    how = d.choice(["field", "add", "remove"])
    if how == "field":
        s.ndim = interesting_int(d, 8, len(s.dims))
        return f"{s.text_name}: ndim field {len(s.dims)} -> {s.ndim}", False, False
    if how == "add":
        at = d.int(0, len(s.dims))
        s.dims.insert(at, d.choice([1, 1, 2, 0]))
        return f"{s.text_name}: insert a dim at {at} -> {s.dims}", False, False
    if not s.dims:
        return noop(d, spec, case)
    at = d.int(0, len(s.dims) - 1)
    s.dims.pop(at)
    return f"{s.text_name}: remove dim {at} -> {s.dims}", False, False


def m_encoding(d, spec, case):
    s = pick_sec(d, spec)
    if s is None:
        return noop(d, spec, case)
    old = s.encoding
    s.encoding = d.choice([0, 1, 2, 3, 4, 127, 255])
    return f"{s.text_name}: encoding {old} -> {s.encoding}", False, False


def m_reserved(d, spec, case):
    s = pick_sec(d, spec)
    if s is None:
        return noop(d, spec, case)
    if s.body == "codebook" and d.bool():
        s.cb_reserved = d.int(1, 255)
        return f"{s.text_name}: codebook reserved -> {s.cb_reserved}", False, False
    s.reserved = d.choice([1, 0x100, 0xFFFF])
    return f"{s.text_name}: tensor reserved -> {s.reserved}", False, False


def m_name(d, spec, case):
    s = pick_sec(d, spec)
    if s is None:
        return noop(d, spec, case)
    others = [spec.items[i].name for i in tensor_items(spec) if spec.items[i] is not s]
    how = d.choice(["other", "empty", "bad_utf8", "append", "long", "len_field", "case"])
    old = s.name
    if how == "other" and others:
        s.name = d.choice(others)
    elif how == "empty":
        s.name = b""
    elif how == "bad_utf8":
        s.name = old[:1] + d.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\x80"]) + old[1:]
    elif how == "append":
        s.name = old + d.choice([b"x", b"\x00", b" "])
    elif how == "long":
        s.name = b"n" * d.choice([1024, 1025, 4000])
    elif how == "len_field":
        s.name_len = interesting_int(d, 16, len(old))
        return f"{s.text_name}: name_len field -> {s.name_len}", False, False
    else:
        s.name = old.upper() if old.upper() != old else old.lower() + b"_"
    return f"{old!r}: name -> {s.name[:40]!r}", False, False


CB_FIELDS = {"bits": 8, "mode": 8, "rel_bits": 8, "k": 32, "nnz": 64, "entries": 64,
             "code_len": 64, "rel_len": 64}


def m_cb_field(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    f = d.choice(list(CB_FIELDS))
    old = getattr(s, f)
    if old is None:
        old = len(s.code_stream if f == "code_len" else s.rel_stream)
    new = interesting_int(d, CB_FIELDS[f], old)
    setattr(s, f, new)
    return f"{s.text_name}: codebook {f} {old} -> {new}", False, False


def m_cb_bits(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    old = s.bits
    s.bits = d.int(max(1, (s.k - 1).bit_length()), 16)
    return f"{s.text_name}: bits {old} -> {s.bits} (K={s.k} still fits)", False, True


def m_cb_mode(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    bounded(s.dims[0] * s.k)
    rows, old = s.dims[0], s.mode
    new = d.choice([m for m in (1, 2, 3) if m != old])
    first = s.book[:4 * s.k]
    if new == C.MODE_PER_CHANNEL:
        s.book = first * rows if old == C.MODE_SHARED or d.bool() else floats(d, rows * s.k)
    else:
        s.book = first
    s.scale = floats(d, rows) if new == C.MODE_SCALED else b""
    s.mode = new
    return f"{s.text_name}: mode {old} -> {new} with a matching body", False, True


def m_cb_k(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    rows = s.dims[0] if s.mode == C.MODE_PER_CHANNEL else 1
    old = s.k
    new = max(1, min(1 << s.bits, d.choice([old - 1, old + 1, old + 3, old // 2, 1, 1 << s.bits])))
    if new == old:
        new = max(1, old - 1) if old > 1 else min(2, 1 << s.bits)
    bounded(rows * new)
    book = [s.book[4 * old * r:4 * old * (r + 1)] for r in range(rows)]
    s.book = b"".join((b[:4 * new] + floats(d, max(0, new - old))) for b in book)
    s.code_lengths = s.code_lengths[:new] + bytes(max(0, new - old))
    s.k = new
    return f"{s.text_name}: K {old} -> {new}, codebook and length table resized", False, False


def m_cb_stream_flip(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    f = d.choice(["code_stream", "rel_stream"])
    b = bytearray(getattr(s, f))
    if not b:
        return m_cb_field(d, spec, case)
    spots = []
    for _ in range(d.weighted([(6, 1), (2, 2), (1, 4)])):
        i, bit = d.int(0, len(b) - 1), d.int(0, 7)
        b[i] ^= 1 << bit
        spots.append(f"{i}.{bit}")
    setattr(s, f, bytes(b))
    return f"{s.text_name}: flip bit(s) {','.join(spots)} of the {f}", False, False


def m_cb_stream_resize(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    f = d.choice(["code_stream", "rel_stream"])
    b = getattr(s, f)
    n = d.choice([1, 1, 2, 8, 1000])
    stale = d.bool(0.3)
    if stale:
        setattr(s, "code_len" if f == "code_stream" else "rel_len", len(b))
    if d.bool() and b:
        setattr(s, f, b[:max(0, len(b) - n)])
        return f"{s.text_name}: {f} cut by {n} (length field {'stale' if stale else 'ok'})", \
            False, False
    setattr(s, f, b + (bytes(n) if d.bool() else d.bytes(n)))
    return f"{s.text_name}: {f} extended by {n} (length field {'stale' if stale else 'ok'})", \
        False, False


def m_cb_stream_swap(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    if d.bool(0.3):
        s.code_stream = d.bytes(d.choice([len(s.code_stream), d.int(0, 64)]))
        return f"{s.text_name}: code stream replaced by random bytes", False, False
    s.code_stream, s.rel_stream = s.rel_stream, s.code_stream
    return f"{s.text_name}: code and rel streams swapped", False, False


def m_cb_lengths(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    f = d.choice(["code_lengths", "rel_lengths"])
    t = bytearray(getattr(s, f))
    how = d.choice(["one", "one", "all", "permute", "shift", "single"])
    if how == "one":
        i = d.int(0, len(t) - 1)
        t[i] = d.choice([0, 1, 2, 3, 8, 16, 17, 23, 24, 25, 31, 255, t[i] + 1, max(0, t[i] - 1)])
        what = f"{f}[{i}] -> {t[i]}"
    elif how == "all":
        v = d.choice([0, 1, 8, 24, 25])
        t = bytearray([v] * len(t))
        what = f"every {f} entry -> {v}"
    elif how == "permute":
        for i in range(len(t) - 1, 0, -1):
            j = d.int(0, i)
            t[i], t[j] = t[j], t[i]
        what = f"{f} permuted"
    elif how == "shift":
        t = t[1:] + t[:1]
        what = f"{f} rotated by one"
    else:
        t = bytearray(len(t))
        t[d.int(0, len(t) - 1)] = d.choice([1, 2, 5])
        what = f"{f}: a single used symbol"
    setattr(s, f, bytes(t))
    return f"{s.text_name}: {what}", False, False


def m_cb_floats(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dense_data(d, spec, case)
    f = "scale" if s.scale and d.bool() else "book"
    b = bytearray(getattr(s, f))
    n = len(b) // 4
    picks = sorted({d.int(0, n - 1) for _ in range(d.choice([1, 1, 2, 5]))})
    for i in picks:
        b[4 * i:4 * i + 4] = floats(d, 1)
    setattr(s, f, bytes(b))
    return f"{s.text_name}: {f} floats {picks} changed", False, True


def m_cb_counts(d, spec, case):
    s = pick_sec(d, spec, "codebook")
    if s is None:
        return m_dim(d, spec, case)
    f = d.choice(["nnz", "entries"])
    old = getattr(s, f)
    setattr(s, f, max(0, old + d.choice([-2, -1, 1, 2])))
    return f"{s.text_name}: {f} {old} -> {getattr(s, f)}", False, False


def m_reencode(d, spec, case):
    """The same tensor written with another relative-index width: valid, same content."""
    idx = tensor_items(spec, "codebook")
    if not idx:
        return noop(d, spec, case)
    i = d.choice(idx)
    name = spec.items[i].text_name
    rel_bits = d.int(1, 16)
    spec.items[i] = parse_tensor_section(encode_tensor(name, case.tensors[name], rel_bits))
    return f"{name}: re-encoded with rel_bits={rel_bits}", True, True


def m_recode(d, spec, case):
    """The tensor with other codes or positions, written by the writer: a valid, different
    model the engine must run exactly as the reference does."""
    idx = tensor_items(spec, "codebook")
    if not idx:
        return noop(d, spec, case)
    i = d.choice(idx)
    name = spec.items[i].text_name
    t = case.tensors[name]
    rng = np.random.default_rng(d.int(0, 2**32 - 1))
    dense = np.full((t.rows, t.row_size), -1, dtype=np.int64)
    rows = np.repeat(np.arange(t.rows), np.diff(t.indptr))
    dense[rows, np.asarray(t.indices, np.int64)] = t.codes
    k = t.codebook.shape[-1]
    how = d.choice(["codes", "positions", "all", "none"])
    if how in ("codes", "all"):
        keep = dense >= 0
        dense[keep] = rng.integers(0, k, int(keep.sum()))
    if how in ("positions", "all"):
        dense = rng.permutation(dense.reshape(-1)).reshape(dense.shape)
    if how == "none":
        dense[:] = -1
    new = from_dense_codes(dense.reshape(t.shape), t.codebook, t.bits, t.scale)
    spec.items[i] = parse_tensor_section(encode_tensor(name, new, d.choice([None, d.int(1, 16)])))
    return f"{name}: re-written with new {how}", False, True


def m_dense_data(d, spec, case):
    s = pick_sec(d, spec, "dense")
    if s is None:
        return m_cb_floats(d, spec, case) if tensor_items(spec, "codebook") else \
            noop(d, spec, case)
    if d.bool(0.7) and s.data:
        b = bytearray(s.data)
        item = 4 if s.encoding == C.ENCODING_F32 else 2
        i = d.int(0, len(b) // item - 1)
        b[item * i:item * i + item] = floats(d, 1)[:item] if item == 4 else \
            np.array([d.choice([0.0, -0.0, 1.0, 65504.0, NAN, INF])], "<f2").tobytes()
        s.data = bytes(b)
        return f"{s.text_name}: dense value {i} changed", False, True
    n = d.choice([-4, -2, -1, 1, 2, 4])
    s.data = s.data[:n] if n < 0 else s.data + bytes(n)
    return f"{s.text_name}: dense data length {n:+d}", False, False


def m_section_edge(d, spec, case):
    s = pick_sec(d, spec)
    if s is None:
        return noop(d, spec, case)
    if d.bool():
        s.cut = d.choice([1, 1, 2, 4, 8, 40, 1000])
        return f"{s.text_name}: section cut by {s.cut} byte(s)", False, False
    s.tail = d.bytes(d.choice([1, 2, 4, 8, 32]))
    return f"{s.text_name}: {len(s.tail)} byte(s) appended to the section", False, False


def m_section_bytes(d, spec, case):
    """Byte damage inside one section's body, its CRC then recomputed by assemble."""
    i = d.int(0, len(spec.items) - 1)
    it = spec.items[i]
    kind = spec.kind_of(i, it)
    data, what = mutate_bytes(d, it.to_bytes(), f"section {i} body (CRC fixed)")
    spec.items[i] = RawSec(kind, data)
    return what, False, False



MUTATIONS = [Mutation(name, weight, "fields", fn) for weight, name, fn in (
    (3, "t.dim", m_dim), (2, "t.dims_permute", m_dims_permute), (2, "t.reshape", m_dims_reshape),
    (2, "t.ndim", m_ndim), (1, "t.encoding", m_encoding), (1, "t.reserved", m_reserved),
    (2, "t.name", m_name), (7, "cb.field", m_cb_field), (2, "cb.bits", m_cb_bits),
    (2, "cb.mode", m_cb_mode), (2, "cb.k", m_cb_k), (5, "cb.stream_flip", m_cb_stream_flip),
    (3, "cb.stream_resize", m_cb_stream_resize), (1, "cb.stream_swap", m_cb_stream_swap),
    (5, "cb.lengths", m_cb_lengths), (2, "cb.floats", m_cb_floats), (2, "cb.counts", m_cb_counts),
    (2, "t.reencode", m_reencode), (3, "t.recode", m_recode), (2, "t.dense", m_dense_data),
    (3, "t.edge", m_section_edge), (4, "s.bytes", m_section_bytes),
)]
