"""Byte-level surgery on .pnn files for the fuzzers' structure-aware mutators and the seeds.

Every byte of a .pnn file outside padding is under a CRC, so a plain byte mutation almost
always stops at a ChecksumError. These helpers take a file apart into its sections (leniently:
whatever the table says, clipped to the bytes there), let a mutator change one part, and put
it back together with a consistent layout and correct CRCs, so the mutant reaches the checks
behind the checksums. Nothing here imports the reader: the fuzzers must not trust it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from formats.constants import (
    HEADER,
    HEADER_CRC_OFFSET,
    HEADER_SIZE,
    MAGIC,
    SECTION_ALIGN,
    SECTION_ENTRY,
    SECTION_METADATA,
    SECTION_METADATA_ZLIB,
)

MAX_SECTIONS_PARSED = 4096  # lenient parsing of mutants: never build a huge table


@dataclass
class Section:
    kind: int
    body: bytes
    r0: int = 0     # the reserved fields, kept so a mutant with them set survives a rebuild
    r1: int = 0


@dataclass
class Layout:
    major: int = 1
    minor: int = 0
    flags: int = 0
    reserved: int = 0
    sections: list[Section] = field(default_factory=list)
    magic: bytes = MAGIC


def parse(data: bytes) -> Layout | None:
    """The sections of `data` as its table describes them (clipped to the bytes there), or
    None when there is no header and table to speak of."""
    if len(data) < HEADER_SIZE:
        return None
    magic, major, minor, flags, count, reserved, _, _, _ = HEADER.unpack_from(data)
    count = min(count, MAX_SECTIONS_PARSED, (len(data) - HEADER_SIZE) // SECTION_ENTRY.size)
    if count < 1:
        return None
    out = Layout(major, minor, flags, reserved, [], magic)
    for i in range(count):
        kind, r0, offset, length, _, r1 = SECTION_ENTRY.unpack_from(
            data, HEADER_SIZE + i * SECTION_ENTRY.size)
        offset = min(offset, len(data))
        out.sections.append(Section(kind, bytes(data[offset:offset + min(length, len(data))]),
                                    r0, r1))
    return out


def build(layout: Layout) -> bytes:
    """A file with the layout the writer would give these sections, and correct CRCs."""
    count = len(layout.sections)
    table_end = HEADER_SIZE + count * SECTION_ENTRY.size
    pos = _align(table_end)
    entries, chunks = [], []
    for s in layout.sections:
        entries.append(SECTION_ENTRY.pack(s.kind & 0xFFFFFFFF, s.r0 & 0xFFFFFFFF, pos,
                                          len(s.body), zlib.crc32(s.body), s.r1 & 0xFFFFFFFF))
        chunks.append((pos, s.body))
        pos = _align(pos + len(s.body))
    size = chunks[-1][0] + len(chunks[-1][1]) if chunks else table_end
    out = bytearray(size)
    table = b"".join(entries)
    out[HEADER_SIZE:table_end] = table
    for at, body in chunks:
        out[at:at + len(body)] = body
    head = HEADER.pack(layout.magic[:8].ljust(8, b"\0"), layout.major & 0xFFFF,
                       layout.minor & 0xFFFF, layout.flags & 0xFFFFFFFF, count,
                       layout.reserved & 0xFFFFFFFF, size, zlib.crc32(table), 0)
    out[:HEADER_SIZE] = head
    struct.pack_into("<I", out, HEADER_CRC_OFFSET, zlib.crc32(out[:HEADER_CRC_OFFSET]))
    return bytes(out)


def fix_crcs(data: bytes, fix_size: bool = False) -> bytes:
    """`data` with every CRC its table points at recomputed in place (layout untouched), and
    the header's file_size set to the real size when `fix_size`."""
    if len(data) < HEADER_SIZE:
        return data
    out = bytearray(data)
    count = struct.unpack_from("<I", out, 16)[0]
    count = min(count, (len(out) - HEADER_SIZE) // SECTION_ENTRY.size)
    for i in range(count):
        at = HEADER_SIZE + i * SECTION_ENTRY.size
        _, _, offset, length, _, _ = SECTION_ENTRY.unpack_from(out, at)
        if offset <= len(out) and length <= len(out) - offset:
            struct.pack_into("<I", out, at + 24, zlib.crc32(out[offset:offset + length]))
    if fix_size:
        struct.pack_into("<Q", out, 24, len(out))
    table_end = HEADER_SIZE + count * SECTION_ENTRY.size
    struct.pack_into("<I", out, 32, zlib.crc32(out[HEADER_SIZE:table_end]))
    struct.pack_into("<I", out, HEADER_CRC_OFFSET, zlib.crc32(out[:HEADER_CRC_OFFSET]))
    return bytes(out)


def metadata_json(section: Section) -> bytes | None:
    """The JSON text of a metadata section (inflated, at most 1 MiB), or None."""
    if section.kind == SECTION_METADATA:
        return section.body
    if section.kind == SECTION_METADATA_ZLIB:
        d = zlib.decompressobj()
        try:
            raw = d.decompress(section.body, 1 << 20)
        except zlib.error:
            return None
        return raw if d.eof else None
    return None


def with_metadata(section: Section, text: bytes, compress: bool | None = None) -> Section:
    """A metadata section holding `text`, compressed like `section` unless told."""
    if compress is None:
        compress = section.kind == SECTION_METADATA_ZLIB
    if compress:
        return Section(SECTION_METADATA_ZLIB, zlib.compress(text, 9), section.r0, section.r1)
    return Section(SECTION_METADATA, text, section.r0, section.r1)


def plain_metadata(data: bytes) -> bytes:
    """The same file with its metadata stored as plain JSON (section type 1)."""
    layout = parse(data)
    text = metadata_json(layout.sections[0])
    layout.sections[0] = with_metadata(layout.sections[0], text, compress=False)
    return build(layout)


def tensor_head_span(body: bytes) -> int:
    """How many leading bytes of a tensor section are header fields (name, encoding, dims and
    the codebook head): the part where a field-sized mutation means most. Lenient."""
    if len(body) < 2:
        return len(body)
    n = struct.unpack_from("<H", body)[0]
    at = 2 + n
    if at + 4 > len(body):
        return len(body)
    encoding, ndim = body[at], body[at + 1]
    at += 4 + 8 * min(ndim, 16)
    if encoding == 3:
        at += 40
    return min(at, len(body))


def _align(n: int) -> int:
    return -(-n // SECTION_ALIGN) * SECTION_ALIGN
