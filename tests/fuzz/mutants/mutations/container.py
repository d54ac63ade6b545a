"""Mutations of the container: extra sections, tensor sections reordered, versions and flags
(fields, written by assemble); header and table fields with the CRCs recomputed, bytes after
the last section, padding, and raw damage with nothing repaired (bytes of the assembled file)."""

from __future__ import annotations

import struct

from formats import constants as C
from tests.fuzz.mutants.mutations.edits import (
    Mutation,
    interesting_int,
    mutate_bytes,
    tensor_items,
)
from tests.fuzz.mutants.sections import U32, RawSec, fix_crcs


def m_extra_section(d, spec, case):
    at = d.int(1, len(spec.items))
    how = d.choice(["optional", "optional", "required", "metadata", "tensor_garbage"])
    data = d.bytes(d.choice([0, 1, 5, 32, 100]))
    if how == "optional":
        kind = C.SECTION_OPTIONAL_BIT | d.choice([0, 1, 2, 3, 7, 0x7FFFFFFF])
        spec.items.insert(at, RawSec(kind, data))
        spec.renumber()
        return f"optional section type {kind:#x} inserted at {at}", True, True
    kind = {"required": d.choice([0, 4, 5, 0x7FFFFFFF]), "metadata": d.choice([1, 3]),
            "tensor_garbage": C.SECTION_TENSOR}[how]
    spec.items.insert(at, RawSec(kind, data))
    if d.bool():
        spec.renumber()
    return f"section type {kind} inserted at {at}", False, False


def m_reorder(d, spec, case):
    idx = tensor_items(spec)
    if len(idx) < 2:
        return m_extra_section(d, spec, case)
    i, j = d.choice(idx), d.choice(idx)
    spec.items[i], spec.items[j] = spec.items[j], spec.items[i]
    if d.bool():
        spec.renumber()
        return f"tensor sections {i} and {j} swapped, list renumbered", True, True
    return f"tensor sections {i} and {j} swapped, list stale", i == j, i == j


def m_version(d, spec, case):
    how = d.choice(["minor", "info_flag", "req_flag", "major"])
    if how == "minor":
        spec.minor = d.choice([1, 7, 0xFFFF])
        return f"minor version {spec.minor}", True, True
    if how == "info_flag":
        spec.flags = 1 << d.int(16, 31)
        return f"informational flag {spec.flags:#x}", True, True
    if how == "req_flag":
        spec.flags = 1 << d.int(0, 15)
        return f"required flag {spec.flags:#x}", False, False
    spec.major = d.choice([0, 2, 0xFFFF])
    return f"major version {spec.major}", False, False


HEADER_FIELDS = {"major": (8, 16), "minor": (10, 16), "flags": (12, 32), "count": (16, 32),
                 "reserved": (20, 32), "file_size": (24, 64)}
ENTRY_FIELDS = {"type": (0, 32), "reserved0": (4, 32), "offset": (8, 64), "length": (16, 64),
                "crc": (24, 32), "reserved1": (28, 32)}


def _put(blob: bytearray, at: int, width: int, value: int) -> None:
    blob[at:at + width // 8] = value.to_bytes(width // 8, "little")


def b_header_field(d, blob: bytearray, case):
    f = d.choice(list(HEADER_FIELDS))
    at, width = HEADER_FIELDS[f]
    old = int.from_bytes(blob[at:at + width // 8], "little")
    new = interesting_int(d, width, old)
    _put(blob, at, width, new)
    fix_crcs(blob)
    same = valid = (f == "minor") or (f == "flags" and new & 0xFFFF == 0)
    return blob, f"header {f} {old} -> {new} (CRCs fixed)", same, valid


def b_table_field(d, blob: bytearray, case):
    count = U32.unpack_from(blob, 16)[0]
    i = d.int(0, count - 1)
    f = d.choice(list(ENTRY_FIELDS))
    off, width = ENTRY_FIELDS[f]
    at = C.HEADER_SIZE + 32 * i + off
    old = int.from_bytes(blob[at:at + width // 8], "little")
    if f == "offset" and d.bool():
        new = max(0, old + d.choice([-32, -1, 1, 32, 64]))
    elif f == "length" and d.bool():
        new = max(0, old + d.choice([-1, 1, 31, 32]))
    else:
        new = interesting_int(d, width, old)
    _put(blob, at, width, new)
    fix_crcs(blob)
    return blob, f"table[{i}].{f} {old} -> {new} (CRCs fixed)", False, False


def b_trailing(d, blob: bytearray, case):
    n = d.choice([1, 8, 31, 32, 100])
    blob += bytes(n) if d.bool() else d.bytes(n)
    _put(blob, 24, 64, len(blob))
    fix_crcs(blob)
    return blob, f"{n} byte(s) after the last section, file_size updated (CRCs fixed)", \
        True, False


def b_raw(d, blob: bytearray, case):
    """Raw damage, nothing repaired: must be refused or harmless."""
    count = min(U32.unpack_from(blob, 16)[0], 64)
    regions = {"anywhere": (0, len(blob)), "header": (0, C.HEADER_SIZE),
               "table": (C.HEADER_SIZE, C.HEADER_SIZE + 32 * count)}
    for i in range(count):
        off, ln = struct.unpack_from("<QQ", blob, C.HEADER_SIZE + 32 * i + 8)
        regions[f"section {i}"] = (off, off + ln)
    name = d.choice(sorted(regions))
    lo, hi = regions[name]
    lo, hi = min(lo, len(blob)), min(max(hi, lo + 1), len(blob))
    head, part, tail = blob[:lo], blob[lo:hi], blob[hi:]
    part, what = mutate_bytes(d, bytes(part), f"raw, {name}")
    return bytearray(head + part + tail), what, True, False


def b_padding(d, blob: bytearray, case):
    """A byte of the zero padding between sections: not checksummed, not read: harmless."""
    count = U32.unpack_from(blob, 16)[0]
    gaps, prev = [], C.HEADER_SIZE + 32 * count
    for i in range(count):
        off, ln = struct.unpack_from("<QQ", blob, C.HEADER_SIZE + 32 * i + 8)
        gaps += range(prev, off)
        prev = off + ln
    if not gaps:
        return b_raw(d, blob, case)
    at = d.choice(gaps)
    blob[at] = d.int(1, 255)
    return blob, f"padding byte {at} -> {blob[at]}", True, True


MUTATIONS = [
    Mutation("c.extra_section", 1, "fields", m_extra_section),
    Mutation("c.reorder", 1, "fields", m_reorder),
    Mutation("c.version", 1, "fields", m_version),
    Mutation("c.header", 4, "bytes", b_header_field),
    Mutation("c.table", 5, "bytes", b_table_field),
    Mutation("c.trailing", 1, "bytes", b_trailing),
    Mutation("raw", 14, "bytes", b_raw),
    Mutation("raw.padding", 2, "bytes", b_padding),
]
