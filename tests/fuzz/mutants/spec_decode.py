"""The independent decoder: docs/FORMAT.md read literally. Nothing of formats/' reader or
decoders is imported, only its constants and the in-memory tensor type with its documented
dtype rules (`code_dtype`, `index_dtype`). Slow (a bit-by-bit Huffman decoder): it runs only
on files a target accepted."""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from formats import constants as C
from formats.tensors import CodebookTensor, code_dtype, index_dtype
from tests.fuzz.mutants.sections import U16, U64


class SpecInvalid(Exception):
    """The file breaks a rule of docs/FORMAT.md."""


class OracleSkip(Exception):
    """Too big for the pure-Python oracle (the reader accepted it: its own peak is measured)."""


ORACLE_MAX_ROWS = 1 << 22
ORACLE_MAX_BITS = 1 << 24   # stream bits the bit-by-bit decoder will walk


@dataclass
class SpecFile:
    metadata: dict
    tensors: dict
    notes: list                 # things the spec says a file must not do, that a reader may allow


def _canonical_book(lengths: list[int]) -> dict:
    """{bit string: symbol} of the canonical code (DEFLATE's assignment)."""
    top = max(lengths)
    bl_count = [0] * (top + 1)
    for ln in lengths:
        if ln:
            bl_count[ln] += 1
    code, next_code = 0, [0] * (top + 2)
    for bits in range(1, top + 1):
        code = (code + bl_count[bits - 1]) << 1
        next_code[bits] = code
    book = {}
    for sym, ln in enumerate(lengths):
        if ln:
            book[format(next_code[ln], f"0{ln}b")] = sym
            next_code[ln] += 1
    return book


def spec_huffman(data: bytes, lengths: bytes, count: int) -> list[int]:
    """The first `count` symbols; the stream must be exactly ceil(bits / 8) bytes."""
    lengths = list(lengths)
    if count == 0:
        if data:
            raise SpecInvalid("stream bytes for zero symbols")
        return []
    if count > 8 * len(data):
        raise SpecInvalid("stream shorter than one bit per symbol")
    if 8 * len(data) > ORACLE_MAX_BITS:
        raise OracleSkip("stream too long for the bit-by-bit decoder")
    used = sorted({ln for ln in lengths if ln})
    if not used:
        raise SpecInvalid("no codes for a non-empty stream")
    book = _canonical_book(lengths)
    bits = "".join(format(b, "08b") for b in data)
    nbits, pos, out = len(bits), 0, []
    for _ in range(count):
        for ln in used:
            if pos + ln > nbits:
                raise SpecInvalid("stream ends inside a codeword")
            sym = book.get(bits[pos:pos + ln])
            if sym is not None:
                out.append(sym)
                pos += ln
                break
        else:
            raise SpecInvalid("unassigned code")
    if (pos + 7) // 8 != len(data):
        raise SpecInvalid("stray bytes after the last codeword")
    return out


def _check_lengths(table: bytes) -> None:
    if table and max(table) > C.MAX_CODE_LEN:
        raise SpecInvalid("code length over 24")
    if sum(1 << (C.MAX_CODE_LEN - ln) for ln in table if ln) > 1 << C.MAX_CODE_LEN:
        raise SpecInvalid("Kraft sum over 1")


class _Cur:
    def __init__(self, b: bytes) -> None:
        self.b, self.pos = b, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.b):
            raise SpecInvalid("section too short")
        out = self.b[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st_: struct.Struct):
        return st_.unpack(self.take(st_.size))


def spec_tensor(b: bytes, expected: str):
    cur = _Cur(b)
    (nl,) = cur.unpack(U16)
    if not 1 <= nl <= C.MAX_NAME_BYTES:
        raise SpecInvalid("name length")
    try:
        name = cur.take(nl).decode("utf-8")
    except UnicodeDecodeError:
        raise SpecInvalid("name not UTF-8") from None
    if name != expected:
        raise SpecInvalid("name differs from the metadata's")
    enc, ndim, reserved = cur.unpack(C.TENSOR_HEAD)
    if reserved:
        raise SpecInvalid("reserved tensor field")
    if enc not in (1, 2, 3):
        raise SpecInvalid("encoding")
    if ndim > 8 or (enc == 3 and ndim < 1):
        raise SpecInvalid("ndim")
    dims = [cur.unpack(U64)[0] for _ in range(ndim)]
    if any(x > C.MAX_DIM for x in dims) or math.prod(x or 1 for x in dims) > C.MAX_ELEMENTS:
        raise SpecInvalid("dims (each, or their product with zero dims counted as 1)")
    size = math.prod(dims)
    if enc in (1, 2):
        item = 4 if enc == 1 else 2
        data = cur.take(len(b) - cur.pos)
        if len(data) != size * item:
            raise SpecInvalid("dense data length")
        return np.frombuffer(data, "<f4" if enc == 1 else "<f2").astype(
            np.float32 if enc == 1 else np.float16).reshape(dims)
    bits, mode, rel_bits, res, k, nnz, n_entries, code_len, rel_len = cur.unpack(C.CODEBOOK_HEAD)
    if not 1 <= bits <= 16 or mode not in (1, 2, 3) or not 1 <= rel_bits <= 16 or res:
        raise SpecInvalid("codebook head field")
    if not 1 <= k <= 1 << bits:
        raise SpecInvalid("K")
    filler = (1 << rel_bits) - 1
    if nnz > size:
        raise SpecInvalid("nnz > size")
    if not nnz <= n_entries <= nnz + size // filler or (nnz == 0 and n_entries):
        raise SpecInvalid("entry_count")
    rows = dims[0]
    if rows > C.ROWS_PER_BYTE * len(b) + C.MIN_ROWS_ALLOWANCE:
        raise SpecInvalid("more rows than the section pays for (the row limit)")
    if rows > ORACLE_MAX_ROWS:
        raise OracleSkip(f"{rows} rows")
    book = cur.take(4 * k * (rows if mode == 2 else 1))
    scale = cur.take(4 * rows) if mode == 3 else None
    code_lengths = cur.take(k)
    rel_lengths = cur.take(1 << rel_bits)
    code_stream = cur.take(code_len)
    rel_stream = cur.take(rel_len)
    if cur.pos != len(b):
        raise SpecInvalid("bytes after the rel stream")
    _check_lengths(code_lengths)
    _check_lengths(rel_lengths)
    codes = spec_huffman(code_stream, code_lengths, nnz)
    entries = spec_huffman(rel_stream, rel_lengths, n_entries)
    positions, at, skip = [], -1, 0
    for e in entries:
        if e == filler:
            skip += filler
        else:
            at += skip + e + 1
            skip = 0
            positions.append(at)
    if entries and entries[-1] == filler:
        raise SpecInvalid("rel stream ends with a filler")
    if len(positions) != nnz:
        raise SpecInvalid("positions != nnz")
    if positions and positions[-1] >= size:
        raise SpecInvalid("position past the end")
    row_size = math.prod(dims[1:])
    counts = [0] * rows
    indices = []
    for p in positions:
        r, col = divmod(p, row_size)
        counts[r] += 1
        indices.append(col)
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.array(counts, dtype=np.int64), out=indptr[1:])
    bookarr = np.frombuffer(book, "<f4").astype(np.float32)
    return CodebookTensor(
        shape=tuple(dims), indptr=indptr, indices=np.array(indices, dtype=index_dtype(row_size)),
        codes=np.array(codes, dtype=code_dtype(bits)),
        codebook=bookarr.reshape(rows, k) if mode == 2 else bookarr,
        scale=None if scale is None else np.frombuffer(scale, "<f4").astype(np.float32),
        bits=bits)


def _no_constant(name):
    raise SpecInvalid(f"JSON constant {name} (the spec forbids NaN/Infinity)")


def _finite_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise SpecInvalid(f"JSON number {text[:20]} overflows to infinity (forbidden)")
    return v


def _json_size(doc) -> tuple[int, int]:
    """(values, nesting depth) of a parsed JSON document: every object, array and scalar
    (object keys not counted), containers nesting from 1 at the top. Iterative."""
    values, depth, todo = 0, 0, [(doc, 1)]
    while todo:
        v, level = todo.pop()
        values += 1
        if isinstance(v, dict):
            depth = max(depth, level)
            todo += [(x, level + 1) for x in v.values()]
        elif isinstance(v, list):
            depth = max(depth, level)
            todo += [(x, level + 1) for x in v]
    return values, depth


def spec_decode(blob: bytes) -> SpecFile:
    """Decode a whole file by the letter of docs/FORMAT.md, or raise SpecInvalid."""
    notes = []
    if len(blob) < C.HEADER_SIZE:
        raise SpecInvalid("shorter than a header")
    magic, major, minor, flags, count, reserved, file_size, table_crc, head_crc = \
        C.HEADER.unpack_from(blob)
    if magic != C.MAGIC or major != 1:
        raise SpecInvalid("magic or major")
    if zlib.crc32(blob[:36]) != head_crc:
        raise SpecInvalid("header CRC")
    if flags & 0xFFFF or reserved:
        raise SpecInvalid("required flags or reserved")
    if file_size != len(blob):
        raise SpecInvalid("file_size")
    if not 1 <= count <= 1 << 20 or 40 + 32 * count > file_size:
        raise SpecInvalid("section count")
    table = blob[40:40 + 32 * count]
    if zlib.crc32(table) != table_crc:
        raise SpecInvalid("table CRC")
    sections, prev_end = [], 40 + 32 * count
    for i in range(count):
        kind, r0, off, ln, crc, r1 = C.SECTION_ENTRY.unpack_from(table, 32 * i)
        if r0 or r1:
            raise SpecInvalid("reserved table field")
        if kind not in (1, 2, 3) and not kind & 0x80000000:
            raise SpecInvalid("required unknown section type")
        if off % 32 or off < prev_end or off + ln > file_size:
            raise SpecInvalid("section placement")
        if any(blob[prev_end:off]):
            notes.append("nonzero padding")
        prev_end = off + ln
        sections.append((kind, off, ln, crc))
    if prev_end != file_size:
        notes.append("bytes after the last section")
    if sections[0][0] not in (1, 3) or any(s[0] in (1, 3) for s in sections[1:]):
        raise SpecInvalid("metadata section placement")

    def body(i: int) -> bytes:
        kind, off, ln, crc = sections[i]
        raw = blob[off:off + ln]
        if zlib.crc32(raw) != crc:
            raise SpecInvalid(f"section {i} CRC")
        return raw

    if sections[0][2] > C.MAX_METADATA_BYTES:
        raise SpecInvalid("metadata too long")
    raw = body(0)
    if sections[0][0] == 3:
        d = zlib.decompressobj()
        try:
            raw = d.decompress(raw, C.MAX_METADATA_BYTES + 1)
        except zlib.error:
            raise SpecInvalid("zlib") from None
        if len(raw) > C.MAX_METADATA_BYTES or d.unconsumed_tail or not d.eof or d.unused_data:
            raise SpecInvalid("zlib stream size or end")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecInvalid("metadata not UTF-8") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise SpecInvalid("metadata not JSON (or nested too deep)") from None
    values, depth = _json_size(doc)
    if depth > C.MAX_METADATA_DEPTH or values > C.MAX_METADATA_VALUES:
        raise SpecInvalid(f"metadata JSON of {values} values, {depth} levels: over the limits")
    if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict) \
            or not isinstance(doc.get("tensors"), list):
        raise SpecInvalid("metadata document shape")
    names, seen = {}, set()
    for entry in doc["tensors"]:
        if not isinstance(entry, dict):
            raise SpecInvalid("tensor entry")
        name, index = entry.get("name"), entry.get("section")
        if not isinstance(name, str) or not name or name in names:
            raise SpecInvalid("tensor name")
        if type(index) is not int or not 1 <= index < count or sections[index][0] != 2:
            raise SpecInvalid("tensor section index")
        if index in seen:
            raise SpecInvalid("section listed twice")
        seen.add(index)
        names[name] = index
    if seen != {i for i, s in enumerate(sections) if s[0] == 2}:
        raise SpecInvalid("tensor sections not listed one to one")
    if list(names.values()) != sorted(names.values()):
        notes.append("tensor list not in file order")
    tensors = {name: spec_tensor(body(i), name) for name, i in names.items()}
    return SpecFile(doc["metadata"], tensors, notes)

