"""Whole .pnn files: round trips, determinism, laziness, atomic writes and hostile files."""

import os
import struct
import time
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import formats
from formats import constants as C
from formats import huffman
from formats.writer import assemble, encode_tensor

# ---- helpers ----------------------------------------------------------------------------------


def make_codebook(seed: int, shape, density: float, bits: int, mode: str) -> formats.CodebookTensor:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, (1 << bits) + 1))
    codes = rng.integers(0, k, shape)
    codes[rng.random(shape) >= density] = -1
    if mode == "per_channel":
        book = rng.standard_normal((shape[0], k)).astype(np.float32)
    else:
        book = rng.standard_normal(k).astype(np.float32)
    scale = rng.random(shape[0]).astype(np.float32) if mode == "scaled" else None
    # built by hand: from_dense_codes cannot reshape empty tensors
    flat = codes.reshape(shape[0], int(np.prod(shape[1:], dtype=np.int64)))
    keep = flat >= 0
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int64)
    return formats.CodebookTensor(tuple(shape), indptr, np.nonzero(keep)[1].astype(np.int32),
                                  flat[keep].astype(formats.code_dtype(bits)), book, scale, bits)


def assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()
        return
    assert isinstance(b, formats.CodebookTensor)
    assert a.shape == b.shape and a.bits == b.bits
    assert b.indptr.dtype == np.int64 and b.indices.dtype == formats.index_dtype(a.row_size)
    assert b.codes.dtype == formats.code_dtype(a.bits) and b.codebook.dtype == np.float32
    for field in ("indptr", "indices", "codes", "codebook"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert (a.scale is None) == (b.scale is None)
    if a.scale is not None:
        assert b.scale.dtype == np.float32
        np.testing.assert_array_equal(a.scale, b.scale)
    b.validate()


def read_all(path):
    with formats.open(path) as f:
        return f.metadata, f.tensors()


SMALL = {
    "w": np.arange(6, dtype=np.float32).reshape(2, 3),
    "h": np.array([1.5, -2.0], dtype=np.float16),
    "c": make_codebook(0, (3, 2, 2), 0.5, 2, "shared"),
}


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.pnn"
    formats.write(path, {"n": 1}, SMALL)
    return path


# ---- round trips ------------------------------------------------------------------------------

shapes = st.lists(st.integers(0, 7), min_size=1, max_size=4).map(tuple)


@given(shapes, st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.sampled_from([1, 2, 4, 8, 12, 16]),
       st.sampled_from(["shared", "per_channel", "scaled"]), st.integers(0, 2**32 - 1),
       st.sampled_from([None, 1, 3, 16]))
def test_codebook_roundtrip(tmp_path_factory, shape, density, bits, mode, seed, rel_bits):
    t = make_codebook(seed, shape, density, bits, mode)
    path = tmp_path_factory.mktemp("rt") / "m.pnn"
    size = formats.write(path, {"k": [1, "x"]}, {"t": t}, rel_bits=rel_bits)
    assert size == os.path.getsize(path)
    meta, out = read_all(path)
    assert meta == {"k": [1, "x"]}
    assert_same(t, out["t"])
    info = formats.open(path).info("t")
    assert info.encoding == "codebook" and info.nnz == t.nnz and info.bits == bits
    assert info.codebook_mode == mode and info.shape == shape
    if rel_bits is not None:
        assert info.rel_bits == rel_bits


@given(st.lists(st.integers(0, 6), max_size=4).map(tuple),
       st.sampled_from([np.float32, np.float16]), st.integers(0, 2**32 - 1))
def test_dense_roundtrip(tmp_path_factory, shape, dtype, seed):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if a.size:
        a.flat[0] = np.nan
    path = tmp_path_factory.mktemp("rt") / "d.pnn"
    formats.write(path, {}, {"a": a})
    assert_same(a, read_all(path)[1]["a"])
    info = formats.open(path).info("a")
    assert info.encoding == ("f32" if dtype == np.float32 else "f16") and info.nnz == a.size


def test_big_8_bit_layer_and_many_tensors(tmp_path):
    tensors = {f"t{i}": make_codebook(i, (4, 3), 0.6, 4, "shared") for i in range(150)}
    tensors["big"] = make_codebook(1, (64, 32, 3, 3), 0.1, 8, "shared")
    tensors["dense8"] = make_codebook(2, (16, 100), 1.0, 8, "scaled")
    tensors["empty"] = make_codebook(3, (0, 5), 0.5, 4, "shared")
    tensors["zeros"] = make_codebook(4, (5, 5), 0.0, 4, "per_channel")
    tensors["e32"] = np.zeros((0, 3), dtype=np.float32)
    path = tmp_path / "many.pnn"
    formats.write(path, {"labels": ["a", "é"]}, tensors)
    with formats.open(path) as f:
        assert f.tensor_names == list(tensors)
        assert f.metadata == {"labels": ["a", "é"]}
        for name, t in tensors.items():
            assert_same(t, f.tensor(name))


def test_lazy_single_tensor_and_offsets(small_file):
    f = formats.open(small_file)
    assert f.version == (C.VERSION_MAJOR, C.VERSION_MINOR)
    assert f.file_size == os.path.getsize(small_file)
    assert_same(SMALL["c"], f.tensor("c"))
    infos = [f.info(n) for n in f.tensor_names]
    assert all(i.offset % C.SECTION_ALIGN == 0 for i in infos)
    assert infos[-1].offset + infos[-1].nbytes == f.file_size
    with pytest.raises(KeyError):
        f.tensor("nope")


def test_lazy_decode_reads_only_its_section(small_file):
    raw = bytearray(small_file.read_bytes())
    f = formats.open(small_file)
    c = f.info("c")
    raw[c.offset + 3] ^= 0xFF  # damage tensor "c" only
    small_file.write_bytes(bytes(raw))
    assert_same(SMALL["w"], f.tensor("w"))
    with pytest.raises(formats.ChecksumError) as e:
        f.tensor("c")
    assert e.value.section == 3 and "tensor 'c'" in str(e.value) and str(small_file) in str(e.value)


def test_deterministic(tmp_path):
    tensors = {"a": make_codebook(7, (20, 30), 0.3, 5, "scaled"), "b": SMALL["w"]}
    meta = {"z": 1, "a": {"y": [1, 2], "b": None}}
    formats.write(tmp_path / "1.pnn", meta, tensors)
    formats.write(tmp_path / "2.pnn", dict(reversed(meta.items())), tensors)
    assert (tmp_path / "1.pnn").read_bytes() == (tmp_path / "2.pnn").read_bytes()


def test_auto_rel_bits_is_smallest(tmp_path):
    t = make_codebook(5, (32, 200), 0.05, 4, "shared")
    auto = len(encode_tensor("t", t))
    assert all(auto <= len(encode_tensor("t", t, b)) for b in C.AUTO_REL_BITS)


def test_no_resource_warnings(small_file):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with formats.open(small_file) as f:
            f.tensors()
        formats.PnnFile(small_file).tensor("w")


# ---- atomic writes ----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [
    {"x": np.zeros(3, dtype=np.float64)},
    {"x": np.zeros(3, dtype=np.int32)},
    {"x": [1.0, 2.0]},
    {"ok": SMALL["w"], "x": formats.CodebookTensor(
        (2, 2), np.array([0, 1, 2]), np.array([0, 0], np.int32), np.array([0, 5], np.uint8),
        np.zeros(4, np.float32), None, 2)},  # code 5 >= K
    {"": SMALL["w"]},
])
def test_failed_write_leaves_old_file_untouched(small_file, bad):
    before = small_file.read_bytes()
    with pytest.raises((ValueError, TypeError)):
        formats.write(small_file, {}, bad)
    assert small_file.read_bytes() == before
    assert os.listdir(small_file.parent) == [small_file.name]


def test_bad_metadata_or_rel_bits_is_refused(tmp_path):
    with pytest.raises(ValueError):
        formats.write(tmp_path / "m.pnn", {"x": float("nan")}, {})
    with pytest.raises(ValueError):
        formats.write(tmp_path / "m.pnn", {"x": object()}, {})
    with pytest.raises(ValueError):
        formats.write(tmp_path / "m.pnn", {}, {}, rel_bits=0)
    assert os.listdir(tmp_path) == []


# ---- hostile and damaged files ----------------------------------------------------------------


def test_missing_directory_and_not_a_file(tmp_path):
    with pytest.raises(formats.FormatError, match="does not exist") as e:
        formats.open(tmp_path / "missing.pnn")
    assert "missing.pnn" in str(e.value)
    with pytest.raises(formats.FormatError, match="directory"):
        formats.open(tmp_path)


def test_wrong_magic(tmp_path, small_file):
    raw = small_file.read_bytes()
    for junk in (b"PK\x03\x04" + raw[4:], raw.replace(b"\r\n", b"\n", 1), b"hello world"):
        p = tmp_path / "bad.pnn"
        p.write_bytes(junk)
        with pytest.raises(formats.BadMagicError):
            formats.open(p)


def test_other_major_version(tmp_path):
    blob = bytearray(assemble([(C.SECTION_METADATA, b'{"metadata":{},"tensors":[]}')],
                              major=C.VERSION_MAJOR + 1, minor=3))
    p = tmp_path / "v2.pnn"
    p.write_bytes(bytes(blob))
    with pytest.raises(formats.UnsupportedVersionError, match=r"2\.3.*1\.x"):
        formats.open(p)


def test_newer_minor_and_optional_section_are_accepted(tmp_path):
    meta = b'{"metadata":{"a":1},"tensors":[]}'
    blob = assemble([(C.SECTION_METADATA, meta), (C.SECTION_OPTIONAL_BIT | 77, b"future")],
                    minor=C.VERSION_MINOR + 5, flags=1 << 20)
    p = tmp_path / "newer.pnn"
    p.write_bytes(blob)
    f = formats.open(p)
    assert f.version == (C.VERSION_MAJOR, C.VERSION_MINOR + 5) and f.metadata == {"a": 1}
    for kind, flags in ((77, 0), (C.SECTION_METADATA, 1)):
        p.write_bytes(assemble([(C.SECTION_METADATA, meta), (kind, b"x")], flags=flags))
        with pytest.raises(formats.UnsupportedVersionError):
            formats.open(p)


def test_every_prefix_is_truncated(tmp_path, small_file):
    raw = small_file.read_bytes()
    p = tmp_path / "cut.pnn"
    for cut in range(len(raw)):
        p.write_bytes(raw[:cut])
        with pytest.raises(formats.TruncatedError):
            read_all(p)


def covered_bytes(raw: bytes) -> np.ndarray:
    """bool per byte: inside the header, the table or a section (i.e. not padding)."""
    count = C.HEADER.unpack_from(raw)[4]
    covered = np.zeros(len(raw), dtype=bool)
    covered[:C.HEADER_SIZE + count * C.SECTION_ENTRY_SIZE] = True
    for i in range(count):
        _, _, off, length, _, _ = C.SECTION_ENTRY.unpack_from(
            raw, C.HEADER_SIZE + i * C.SECTION_ENTRY_SIZE)
        covered[off:off + length] = True
    return covered


def test_every_flipped_byte_is_caught_or_harmless(tmp_path, small_file):
    raw = small_file.read_bytes()
    covered = covered_bytes(raw)
    meta, good = read_all(small_file)
    p = tmp_path / "flip.pnn"
    for i in range(len(raw)):
        for mask in (0x01, 0x80):
            bad = bytearray(raw)
            bad[i] ^= mask
            p.write_bytes(bytes(bad))
            try:
                meta2, out = read_all(p)
            except formats.FormatError:
                continue
            assert not covered[i], f"flip at byte {i} went unnoticed"
            assert meta2 == meta and out.keys() == good.keys()
            for name in good:
                assert_same(good[name], out[name])


def test_trailing_bytes_are_refused(tmp_path, small_file):
    p = tmp_path / "long.pnn"
    p.write_bytes(small_file.read_bytes() + b"\0")
    with pytest.raises(formats.LayoutError, match="after the declared end"):
        formats.open(p)


def header(count, file_size, table: bytes, *, flags=0, reserved=0) -> bytes:
    head = C.HEADER.pack(C.MAGIC, C.VERSION_MAJOR, C.VERSION_MINOR, flags, count, reserved,
                         file_size, zlib.crc32(table), 0)[:C.HEADER_CRC_OFFSET]
    return head + struct.pack("<I", zlib.crc32(head))


def entry(kind, offset, length, crc=0) -> bytes:
    return C.SECTION_ENTRY.pack(kind, 0, offset, length, crc, 0)


def build(entries: list[bytes], body: bytes = b"") -> bytes:
    table = b"".join(entries)
    size = C.HEADER_SIZE + len(table) + len(body)
    return header(len(entries), size, table) + table + body


@pytest.mark.parametrize("blob_fn, error, reason", [
    # huge section count: refused by size arithmetic before any table is read
    (lambda: header(2**32 - 1, 100, b"") + b"\0" * 60, formats.LayoutError,
     "section count 4294967295 outside"),
    (lambda: header(1000, C.HEADER_SIZE + 64, b"") + b"\0" * 64, formats.LayoutError,
     "table of 1000 sections does not fit"),
    # a section past the end of the file
    (lambda: build([entry(C.SECTION_METADATA, 2**40, 10)]), formats.LayoutError,
     "runs past the end"),
    (lambda: build([entry(C.SECTION_METADATA, 96, 2**63)], b"\0" * 32), formats.LayoutError,
     "runs past the end"),
    # overlapping sections
    (lambda: build([entry(C.SECTION_METADATA, 128, 64), entry(C.SECTION_TENSOR, 160, 16)],
                   b"\0" * 96), formats.LayoutError, "overlapping"),
    # misaligned section
    (lambda: build([entry(C.SECTION_METADATA, 97, 1)], b"\0" * 32), formats.LayoutError,
     "not a multiple of 32"),
    # metadata bigger than the limit
    (lambda: build([entry(C.SECTION_METADATA, 96, C.MAX_METADATA_BYTES + 1)],
                   b"\0" * (C.MAX_METADATA_BYTES + 25)), formats.LayoutError,
     "metadata of 4194305 bytes exceeds the limit"),
    # wrong table CRC
    (lambda: header(1, 100, b"x") + entry(1, 64, 4) + b"\0" * 28, formats.ChecksumError,
     "section table checksum"),
])
def test_hostile_headers_fail_fast(tmp_path, blob_fn, error, reason):
    p = tmp_path / "hostile.pnn"
    p.write_bytes(blob_fn())
    t0 = time.perf_counter()
    with pytest.raises(error, match=reason):
        formats.open(p)
    assert time.perf_counter() - t0 < 1.0


def file_with(sections: list[tuple[int, bytes]], tmp_path) -> str:
    p = tmp_path / "crafted.pnn"
    p.write_bytes(assemble(sections))
    return p


META_T = b'{"metadata":{},"tensors":[{"name":"t","section":1}]}'


@pytest.mark.parametrize("meta, reason", [
    (b"{not json", r"not valid UTF-8 JSON \(JSONDecodeError\)"),
    (b"\xff\xfe", r"not valid UTF-8 JSON \(UnicodeDecodeError\)"),
    (b"[]", "expected an object"),
    (b'{"metadata":{},"tensors":{}}', "expected an object"),
    # nesting and value counts are measured before json.loads builds anything: the same
    # verdict however deep the caller's stack is (json's own recursion limit depends on it)
    (b"[" * 100000, "nests 100000 levels deep, over the limit of 64"),
    (b"[" * 65 + b"]" * 65, "nests 65 levels deep"),
    (b'{"a": "' + b"[" * 1000 + b'"}', "expected an object"),  # brackets in a string: fine
    (b'{"a": "\\\"' + b"[" * 1000 + b'"}', "expected an object"),  # escapes, then a string
    (b"[" + b"[]," * 300000 + b"[]]", "holds about 600,003 values, over the limit of 262,144"),
    (b'{"metadata":{},"tensors":[{"name":"t","section":5}]}', "names section 5, not a tensor"),
    (b'{"metadata":{},"tensors":[{"name":"t","section":true}]}', "names section True"),
    (b'{"metadata":{},"tensors":[{"name":"t","section":0}]}', "names section 0, not a tensor"),
])
def test_bad_metadata_json(tmp_path, meta, reason):
    with pytest.raises(formats.LayoutError, match=reason):
        formats.open(file_with([(C.SECTION_METADATA, meta), (C.SECTION_TENSOR, b"")], tmp_path))


@pytest.mark.parametrize("value", [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999",
                                   b"[1.5, 2e400]"])
@pytest.mark.parametrize("kind", [C.SECTION_METADATA, C.SECTION_METADATA_ZLIB])
def test_metadata_with_nan_or_infinity_is_refused(tmp_path, value, kind):
    """The spec forbids NaN/Infinity, which Python's json accepts by default; a float literal
    too big for a double (1e999) would become inf just the same."""
    meta = b'{"metadata":{"x":' + value + b'},"tensors":[]}'
    data = zlib.compress(meta) if kind == C.SECTION_METADATA_ZLIB else meta
    with pytest.raises(formats.LayoutError, match="NaN/Infinity"):
        formats.open(file_with([(kind, data)], tmp_path))
    ok = b'{"metadata":{"x":[1.5,-2e300,1e-999]},"tensors":[]}'  # big and tiny finite floats
    assert formats.open(file_with([(kind, zlib.compress(ok) if kind == C.SECTION_METADATA_ZLIB
                                    else ok)], tmp_path)).metadata == {"x": [1.5, -2e300, 0.0]}


@pytest.mark.parametrize("meta, needle", [
    (b"\x78\x9c not deflate", "zlib"),
    (zlib.compress(b"{" + b" " * (C.MAX_METADATA_BYTES + 10) + b"}"), "limit"),  # a bomb
    (zlib.compress(b'{"metadata":{},"tensors":[]}')[:-3], "incomplete"),
    (zlib.compress(b'{"metadata":{},"tensors":[]}') + b"extra", "extra"),
])
def test_bad_compressed_metadata(tmp_path, meta, needle):
    with pytest.raises(formats.LayoutError, match=needle):
        formats.open(file_with([(C.SECTION_METADATA_ZLIB, meta)], tmp_path))


def test_plain_and_compressed_metadata_read_alike(tmp_path):
    doc = b'{"metadata":{"a":[1,2]},"tensors":[]}'
    plain = formats.open(file_with([(C.SECTION_METADATA, doc)], tmp_path))
    packed = file_with([(C.SECTION_METADATA_ZLIB, zlib.compress(doc))], tmp_path)
    assert plain.metadata == formats.open(packed).metadata == {"a": [1, 2]}
    formats.write(tmp_path / "w.pnn", {"a": [1, 2]}, {})
    assert formats.open(tmp_path / "w.pnn")._sections[0].kind == C.SECTION_METADATA_ZLIB


def tensor_head(shape, encoding=C.ENCODING_CODEBOOK, name=b"t") -> bytes:
    return (C.TENSOR_NAME_LEN.pack(len(name)) + name + C.TENSOR_HEAD.pack(encoding, len(shape), 0)
            + b"".join(C.DIM.pack(d) for d in shape))


def codebook_body(bits=4, mode=C.MODE_SHARED, rel_bits=2, k=4, nnz=1, entries=1, code_len=1,
                  rel_len=1) -> bytes:
    return C.CODEBOOK_HEAD.pack(bits, mode, rel_bits, 0, k, nnz, entries, code_len, rel_len)


TABLES = b"\0" * 16 + bytes([1, 1, 0, 0]) + bytes([1, 1, 0, 0])  # codebook_body()'s K=4, b=2


HOSTILE_SECTIONS = [
    (tensor_head((2**40, 2**40), C.ENCODING_F32), formats.LayoutError,
     "dimension 1099511627776 exceeds"),
    (tensor_head((2**30, 2**30), C.ENCODING_F32), formats.LayoutError,
     r"spans 1152921504606846976 elements \(zero dims counted as 1\), limit"),
    # empty, yet numpy refuses the shape as too big (found by atheris in CI)
    (tensor_head((0, 2**31 - 1, 2**31 - 1), C.ENCODING_F32), formats.LayoutError,
     r"shape \(0, 2147483647, 2147483647\) spans"),
    (tensor_head((1,) * 9, C.ENCODING_F32), formats.LayoutError, "9 dimensions, limit 8"),
    (tensor_head((4,), C.ENCODING_F32) + b"\0" * 8, formats.LayoutError,
     r"f32 data of shape \(4,\) needs 16 bytes, the section has 8"),
    (tensor_head((4,), 99), formats.UnsupportedVersionError, "encoding 99 is unknown"),
    (tensor_head((4,), C.ENCODING_F32, name=b"u") + b"\0" * 16, formats.LayoutError,
     "section holds tensor 'u', the metadata says 't'"),
    (tensor_head((10, 10)) + codebook_body(k=2**20), formats.LayoutError,
     "codebook size 1048576 outside"),
    (tensor_head((10, 10)) + codebook_body(bits=0), formats.LayoutError, "code width 0"),
    (tensor_head((10, 10)) + codebook_body(rel_bits=17), formats.LayoutError,
     "relative-index width 17"),
    (tensor_head((10, 10)) + codebook_body(mode=9), formats.UnsupportedVersionError,
     "codebook mode 9 is unknown"),
    (tensor_head((10, 10)) + codebook_body(nnz=101), formats.LayoutError,
     "101 nonzeros in a tensor of 100"),
    # huge counts, 2 bytes of streams: refused before anything is allocated from them
    (tensor_head((2**15, 2**15)) + codebook_body(nnz=2**30, entries=2**30) + TABLES + b"\0\0",
     formats.TruncatedError, "1-byte stream cannot hold 1073741824 symbols"),
    (tensor_head((2**15, 2**15)) + codebook_body(mode=C.MODE_PER_CHANNEL, k=16),
     formats.LayoutError, "codebook needs 2097152 bytes"),
    (tensor_head((10, 10)) + codebook_body(code_len=2**60) + TABLES, formats.LayoutError,
     "code stream needs 1152921504606846976 bytes"),
    (tensor_head((10, 10)) + codebook_body() + b"\0" * 16 + bytes([1, 1, 1, 0])
     + bytes([1, 1, 0, 0]) + b"\0\0", formats.LayoutError, "over-subscribed"),
    (tensor_head((10, 10)) + codebook_body(nnz=0, entries=3), formats.LayoutError,
     "3 relative-index entries impossible for 0 nonzeros"),
]


@pytest.mark.parametrize("section, error, reason", HOSTILE_SECTIONS,
                         ids=[reason for *_, reason in HOSTILE_SECTIONS])
def test_hostile_tensor_sections_fail_fast(tmp_path, section, error, reason):
    p = file_with([(C.SECTION_METADATA, META_T), (C.SECTION_TENSOR, section)], tmp_path)
    f = formats.open(p)
    t0 = time.perf_counter()
    with pytest.raises(error, match=reason) as e:
        f.tensor("t")
    assert time.perf_counter() - t0 < 1.0
    assert e.value.section == 1 and e.value.path == os.fspath(p)


def codebook_section(shape, codes, entries, *, bits=2, rel_bits=2, nnz=None, n_entries=None,
                     name=b"t") -> bytes:
    """A shared-codebook tensor section whose Huffman streams validly hold `codes` and the
    relative-index `entries`; the header's nnz and entry count are theirs unless given (to
    make a file whose only fault is the lie we want a check to catch)."""
    codes, entries = np.asarray(codes, dtype=np.int64), np.asarray(entries, dtype=np.int64)
    k = 1 << bits
    code_lengths = huffman.code_lengths(np.bincount(codes, minlength=k))
    rel_lengths = huffman.code_lengths(np.bincount(entries, minlength=1 << rel_bits))
    code_stream = huffman.encode(codes, code_lengths)
    rel_stream = huffman.encode(entries, rel_lengths)
    head = C.CODEBOOK_HEAD.pack(bits, C.MODE_SHARED, rel_bits, 0, k,
                                codes.size if nnz is None else nnz,
                                entries.size if n_entries is None else n_entries,
                                len(code_stream), len(rel_stream))
    return (tensor_head(shape, name=name) + head + np.arange(k, dtype="<f4").tobytes()
            + code_lengths.tobytes() + rel_lengths.tobytes() + code_stream + rel_stream)


def read_section(tmp_path, section):
    return formats.open(file_with([(C.SECTION_METADATA, META_T), (C.SECTION_TENSOR, section)],
                                  tmp_path)).tensor("t")


def test_crafted_section_helper_reads_back(tmp_path):
    # the honest versions of the lies below: entries 0, filler 3, 0 -> positions 0 and 4
    t = read_section(tmp_path, codebook_section((1, 8), [1, 2], [0, 3, 0]))
    np.testing.assert_array_equal(t.to_dense(), [[1, 0, 0, 0, 2, 0, 0, 0]])


def test_nonzero_count_must_match_the_relative_indices(tmp_path):
    # 2 codes, 2 entries (within the entry bound), but a filler and one nonzero: 1 position
    section = codebook_section((1, 8), [1, 2], [3, 0])
    with pytest.raises(formats.LayoutError, match="relative indices give 1 nonzeros, header "
                                                  "says 2"):
        read_section(tmp_path, section)


@pytest.mark.parametrize("shape, codes, entries, rel_bits", [
    ((1, 8), [1, 2, 3], [0, 0], 2),                     # fewer entries than nonzeros
    ((1, 4), [1], [1, 1, 1, 1, 1, 0], 1),               # > nnz + size // filler: 4 + 1 allowed
    ((2, 3), [], [0, 2], 2),                            # entries for an empty tensor
])
def test_entry_count_outside_its_bound_fails_before_decoding(tmp_path, shape, codes, entries,
                                                             rel_bits):
    """nnz <= entry_count <= nnz + size // filler: refused from the header alone (without this
    check the decoded positions would still be refused, later and for another reason)."""
    with pytest.raises(formats.LayoutError, match="relative-index entries impossible"):
        read_section(tmp_path, codebook_section(shape, codes, entries, rel_bits=rel_bits))


def test_stray_bytes_after_the_streams(tmp_path):
    section = encode_tensor("t", SMALL["c"])
    assert_same(SMALL["c"], read_section(tmp_path, section))
    with pytest.raises(formats.LayoutError, match="1 stray bytes at the end of the section"):
        read_section(tmp_path, section + b"\0")


def test_rows_are_paid_for_in_bytes(tmp_path):
    """A codebook tensor of 2**31 - 1 empty rows would make the reader allocate a 16 GiB indptr
    from a section of under 100 bytes: the row limit refuses it first, cheaply."""
    section = codebook_section((2**31 - 1, 1), [], [])
    p = file_with([(C.SECTION_METADATA, META_T), (C.SECTION_TENSOR, section)], tmp_path)
    f = formats.open(p)
    limit = C.ROWS_PER_BYTE * len(section) + C.MIN_ROWS_ALLOWANCE
    for read in (f.info, f.tensor):
        tracemalloc.start()
        try:
            t0 = time.perf_counter()
            with pytest.raises(formats.LayoutError, match=f"2147483647 rows exceed the limit "
                                                          f"of {limit} for a section of "
                                                          f"{len(section)} bytes"):
                read("t")
            seconds = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert seconds < 1.0 and peak < 50 << 20
    # the limit itself is allowed (same section length: a dim is 8 bytes whatever its value)
    t = read_section(tmp_path, codebook_section((limit, 1), [], []))
    assert t.shape == (limit, 1) and t.indptr.shape == (limit + 1,) and t.nnz == 0
    with pytest.raises(formats.LayoutError, match=f"{limit + 1} rows exceed"):
        read_section(tmp_path, codebook_section((limit + 1, 1), [], []))


def test_empty_tensors_read_back_and_writer_refuses_what_the_reader_does(tmp_path):
    formats.write(tmp_path / "e.pnn", {}, {"e": np.zeros((0, 3, 5), np.float32)})
    assert formats.open(tmp_path / "e.pnn").tensor("e").shape == (0, 3, 5)
    with pytest.raises(ValueError, match="spans"):
        formats.write(tmp_path / "f.pnn", {}, {"f": np.zeros((0, 2**31 - 1, 2), np.float32)})
    assert not (tmp_path / "f.pnn").exists()


def test_writer_refuses_rows_the_reader_would(tmp_path):
    def empty(rows):
        return formats.CodebookTensor((rows, 1), np.zeros(rows + 1, np.int64),
                                      np.zeros(0, np.int32), np.zeros(0, np.uint8),
                                      np.zeros(1, np.float32), None, 1)

    formats.write(tmp_path / "ok.pnn", {}, {"t": empty(C.MIN_ROWS_ALLOWANCE)})
    assert formats.open(tmp_path / "ok.pnn").tensor("t").shape == (C.MIN_ROWS_ALLOWANCE, 1)
    with pytest.raises(ValueError, match="tensor 't': 1000000 rows exceed the limit"):
        formats.write(tmp_path / "big.pnn", {}, {"t": empty(10**6)})
    assert not (tmp_path / "big.pnn").exists()


def test_error_message_names_file_section_tensor_offset():
    err = formats.ChecksumError("checksum mismatch", path="model.pnn", section=3,
                                tensor="fc1.weight", offset=1234)
    assert str(err) == ("model.pnn: checksum mismatch in section 3 (tensor 'fc1.weight') "
                        "at byte 1234")
    assert isinstance(err, ValueError)


def test_writer_refuses_metadata_the_reader_would(tmp_path):
    deep = {}
    for _ in range(70):
        deep = {"x": deep}
    with pytest.raises(ValueError, match="nests 7[0-9] levels deep, over the limit of 64"):
        formats.write(tmp_path / "deep.pnn", deep, {})
    with pytest.raises(ValueError, match="over the limit of 262,144"):
        formats.write(tmp_path / "wide.pnn", {"x": [0] * 300_000}, {})
    assert not os.path.exists(tmp_path / "deep.pnn")
