"""A .pnn file as editable fields: a mutation edits a field and `FileSpec.to_bytes` writes the
container (offsets, padding, CRCs) around it, so the damage gets past the CRCs to the deep
checks. Field names follow docs/FORMAT.md."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

from formats import constants as C
from formats.writer import assemble

U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")


@dataclass
class TensorSec:
    """One tensor section as fields (docs/FORMAT.md "Tensor section"). `None` overrides mean
    "the true value" (name_len, ndim, stream lengths); `body` says how the rest is laid out,
    independently of the `encoding` number (so a changed encoding misreads the body)."""

    name: bytes
    encoding: int
    dims: list
    body: str                      # "dense" | "codebook"
    reserved: int = 0
    name_len: int | None = None
    ndim: int | None = None
    data: bytes = b""              # dense
    bits: int = 0
    mode: int = 0
    rel_bits: int = 0
    cb_reserved: int = 0
    k: int = 0
    nnz: int = 0
    entries: int = 0
    code_len: int | None = None
    rel_len: int | None = None
    book: bytes = b""
    scale: bytes = b""
    code_lengths: bytes = b""
    rel_lengths: bytes = b""
    code_stream: bytes = b""
    rel_stream: bytes = b""
    tail: bytes = b""              # appended after the body
    cut: int = 0                   # bytes cut from the end

    @property
    def text_name(self) -> str:
        return self.name.decode("utf-8", "replace")

    def to_bytes(self) -> bytes:
        nl = len(self.name) if self.name_len is None else self.name_len
        nd = len(self.dims) if self.ndim is None else self.ndim
        parts = [U16.pack(nl & 0xFFFF), self.name,
                 C.TENSOR_HEAD.pack(self.encoding & 0xFF, nd & 0xFF, self.reserved & 0xFFFF)]
        parts += [U64.pack(int(d) & (2**64 - 1)) for d in self.dims]
        if self.body == "dense":
            parts.append(self.data)
        else:
            cl = len(self.code_stream) if self.code_len is None else self.code_len
            rl = len(self.rel_stream) if self.rel_len is None else self.rel_len
            parts.append(C.CODEBOOK_HEAD.pack(self.bits & 0xFF, self.mode & 0xFF,
                                              self.rel_bits & 0xFF, self.cb_reserved & 0xFF,
                                              self.k & 0xFFFFFFFF, self.nnz & (2**64 - 1),
                                              self.entries & (2**64 - 1), cl & (2**64 - 1),
                                              rl & (2**64 - 1)))
            parts += [self.book, self.scale, self.code_lengths, self.rel_lengths,
                      self.code_stream, self.rel_stream]
        out = b"".join(parts) + self.tail
        return out[:len(out) - self.cut] if self.cut else out


def parse_tensor_section(b: bytes) -> TensorSec:
    """Fields of a section `encode_tensor` wrote (a valid one; the inverse of to_bytes)."""
    (nl,) = U16.unpack_from(b, 0)
    name = b[2:2 + nl]
    pos = 2 + nl
    enc, ndim, _ = C.TENSOR_HEAD.unpack_from(b, pos)
    pos += C.TENSOR_HEAD.size
    dims = [U64.unpack_from(b, pos + 8 * i)[0] for i in range(ndim)]
    pos += 8 * ndim
    if enc != C.ENCODING_CODEBOOK:
        return TensorSec(name, enc, dims, "dense", data=b[pos:])
    bits, mode, rel_bits, _, k, nnz, entries, cl, rl = C.CODEBOOK_HEAD.unpack_from(b, pos)
    pos += C.CODEBOOK_HEAD.size
    rows = dims[0]
    nbook = 4 * k * (rows if mode == C.MODE_PER_CHANNEL else 1)
    s = TensorSec(name, enc, dims, "codebook", bits=bits, mode=mode, rel_bits=rel_bits, k=k,
                  nnz=nnz, entries=entries)
    s.book = b[pos:pos + nbook]
    pos += nbook
    if mode == C.MODE_SCALED:
        s.scale = b[pos:pos + 4 * rows]
        pos += 4 * rows
    s.code_lengths = b[pos:pos + k]
    pos += k
    s.rel_lengths = b[pos:pos + (1 << rel_bits)]
    pos += 1 << rel_bits
    s.code_stream = b[pos:pos + cl]
    pos += cl
    s.rel_stream = b[pos:pos + rl]
    pos += rl
    assert pos == len(b), "parse_tensor_section: trailing bytes"
    return s


@dataclass
class MetaSec:
    """The metadata section: the JSON document (or raw text replacing it) and its coding."""

    doc: object
    zlib: bool = True
    text: bytes | None = None      # raw JSON bytes, instead of dumping `doc`
    sort_keys: bool = True
    level: int = 9
    zlib_tail: bytes = b""
    zlib_cut: int = 0

    def json_bytes(self) -> bytes:
        if self.text is not None:
            return self.text
        return json.dumps(self.doc, separators=(",", ":"), sort_keys=self.sort_keys,
                          ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")

    def to_bytes(self) -> bytes:
        raw = self.json_bytes()
        if not self.zlib:
            return raw
        z = zlib.compress(raw, self.level) + self.zlib_tail
        return z[:len(z) - self.zlib_cut] if self.zlib_cut else z


@dataclass
class RawSec:
    kind: int
    data: bytes

    def to_bytes(self) -> bytes:
        return self.data


@dataclass
class FileSpec:
    """A whole file as editable parts: items[0] is the metadata, then sections in file order.
    `kinds` overrides a section's table type (index -> type)."""

    items: list
    major: int = C.VERSION_MAJOR
    minor: int = C.VERSION_MINOR
    flags: int = 0
    kinds: dict = field(default_factory=dict)

    def kind_of(self, i: int, item) -> int:
        if i in self.kinds:
            return self.kinds[i]
        if isinstance(item, MetaSec):
            return C.SECTION_METADATA_ZLIB if item.zlib else C.SECTION_METADATA
        if isinstance(item, RawSec):
            return item.kind
        return C.SECTION_TENSOR

    def renumber(self) -> None:
        """Rewrite the metadata's tensor list from the tensor sections' order (a valid map)."""
        self.items[0].doc["tensors"] = [
            {"name": it.text_name, "section": i} for i, it in enumerate(self.items)
            if isinstance(it, TensorSec)]

    def to_bytes(self) -> bytes:
        sections = [(self.kind_of(i, it), it.to_bytes()) for i, it in enumerate(self.items)]
        return assemble(sections, major=self.major, minor=self.minor, flags=self.flags)


def fix_crcs(blob: bytearray) -> bytearray:
    """Recompute the table CRC (over as much table as the header's count names and the file
    holds) and then the header CRC, after a header or table field was edited."""
    if len(blob) < C.HEADER_SIZE:
        return blob
    count = U32.unpack_from(blob, 16)[0]
    end = min(len(blob), C.HEADER_SIZE + C.SECTION_ENTRY_SIZE * count)
    U32.pack_into(blob, 32, zlib.crc32(bytes(blob[C.HEADER_SIZE:end])))
    U32.pack_into(blob, 36, zlib.crc32(bytes(blob[:C.HEADER_CRC_OFFSET])))
    return blob
