"""Mutations of the metadata section's bytes rather than its tree: the JSON text (NaN,
deep nesting, huge numbers, duplicate keys, bad UTF-8, escapes, truncation, big arrays,
other valid spellings) and its coding (zlib level, plain, trailing or cut streams)."""

from __future__ import annotations

import json
import re
import zlib

from formats import constants as C
from tests.fuzz.mutants.mutations.edits import Mutation, noop
from tests.fuzz.mutants.sections import RawSec

NUMBER = re.compile(rb"(?<=[:\[,])-?\d+(\.\d+)?([eE][-+]?\d+)?(?=[,\]}])")


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def m_json_text(d, spec, case):
    m = spec.items[0]
    text = m.json_bytes()
    how = d.weighted([(4, "nan"), (3, "deep"), (1, "bignum"), (2, "dupkey"), (2, "trail"),
                      (1, "bom"), (2, "utf8"), (2, "truncate"), (1, "bigarray"),
                      (2, "pretty"), (1, "ascii"), (1, "escape")])
    same = valid = False
    if how == "nan":
        nums = list(NUMBER.finditer(text))
        if not nums:
            return noop(d, spec, case)
        hit = d.choice(nums)
        tok = d.choice([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"])
        text = text[:hit.start()] + tok + text[hit.end():]
        what = f"number {hit.group().decode()} at {hit.start()} -> {tok.decode()}"
    elif how == "deep":
        depth = d.choice([10, 100, 500, 900, 950, 980, 990, 1000, 1100, 5000, 100000])
        where = d.choice([b'"producer":', b'"labels":', b'"attrs":', b'"metadata":{'])
        at = text.find(where)
        if at < 0:
            where, at = b'{', 0
        at += len(where)
        if where.endswith(b"{"):
            text = text[:at] + b'"deep":' + _deep(depth) + b"," + text[at:]
        else:  # replace the value that follows
            end = _value_end(text, at)
            text = text[:at] + _deep(depth) + text[end:]
        what = f"a {depth}-deep array after {where.decode()}"
    elif how == "bignum":
        nums = list(NUMBER.finditer(text))
        if not nums:
            return noop(d, spec, case)
        hit = d.choice(nums)
        tok = d.choice([b"9" * 5000, b"1" + b"0" * 4299, b"1e400", b"0." + b"0" * 5000 + b"1"])
        text = text[:hit.start()] + tok + text[hit.end():]
        what = f"number at {hit.start()} -> {len(tok)}-character literal"
    elif how == "dupkey":
        keys = list(re.finditer(rb'"(op|name|output|shape|section|stride|kernel|labels)":', text))
        if not keys:
            return noop(d, spec, case)
        hit = d.choice(keys)
        dup = hit.group() + d.choice([b'"relu",', b'1,', b'[1,1],', b'null,', b'"x",'])
        text = text[:hit.start()] + dup + text[hit.start():]
        what = f"duplicate key {hit.group().decode()} inserted before the real one"
    elif how == "trail":
        tail = d.choice([b" ", b"\n", b"\t\r\n ", b"x", b"\x00", b"{}", b",", b"]"])
        text = text + tail
        same = valid = tail.strip() == b""
        what = f"trailing {tail!r} after the JSON"
    elif how == "bom":
        text = b"\xef\xbb\xbf" + text
        what = "UTF-8 byte-order mark before the JSON"
    elif how == "utf8":
        strings = [mt.start() + 1 for mt in re.finditer(rb'"', text)]
        at = d.choice(strings)
        bad = d.choice([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"])
        text = text[:at] + bad + text[at:]
        what = f"invalid UTF-8 {bad.hex()} at {at}"
    elif how == "truncate":
        n = d.int(0, len(text) - 1)
        text = text[:n]
        what = f"JSON cut to {n} of {len(m.json_bytes())} bytes"
    elif how == "bigarray":
        budget = C.MAX_METADATA_BYTES - len(text) - 16
        unit = d.choice([b"0,", b"[],", b"{},", b'"",', b"1.5,"])
        n = d.weighted([(4, 1000), (4, 100000), (2, budget // len(unit) // 8),
                        (1, budget // len(unit))])
        big = b"[" + unit * n + unit[:-1] + b"]"
        at = text.find(b'"producer":')
        if at < 0:
            return noop(d, spec, case)
        at += len(b'"producer":')
        text = text[:at] + big + text[_value_end(text, at):]
        what = f"producer -> a {n}-element array of {unit[:-1].decode()} ({len(big)} bytes)"
    elif how == "pretty":
        text = json.dumps(m.doc, indent=d.choice([1, 2, "\t"]), ensure_ascii=False,
                          allow_nan=True).encode("utf-8", "surrogatepass")
        what, same, valid = "pretty-printed JSON", True, True
    elif how == "ascii":
        text = json.dumps(m.doc, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=True).encode()
        what, same, valid = "JSON with \\u escapes, keys unsorted", True, True
    else:
        strings = [mt.start() + 1 for mt in re.finditer(rb'"', text)]
        at = d.choice(strings)
        esc = d.choice([b"\\u0000", b"\\ud800", b"\\udc00\\ud800", b"\\x41", b"\\", b"\\u00"])
        text = text[:at] + esc + text[at:]
        what = f"escape {esc.decode()} inserted at {at}"
    m.text = text
    return f"metadata JSON text: {what}", same, valid


def _value_end(text: bytes, at: int) -> int:
    """End of the JSON value starting at `at` (a scalar, string, array or object)."""
    depth, i, in_str = 0, at, False
    while i < len(text):
        ch = text[i:i + 1]
        if in_str:
            if ch == b"\\":
                i += 1
            elif ch == b'"':
                in_str = False
                if depth == 0:
                    return i + 1
        elif ch == b'"':
            in_str = True
        elif ch in b"[{":
            depth += 1
        elif ch in b"]}":
            if depth == 0:
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif ch == b"," and depth == 0:
            return i
        i += 1
    return len(text)


def m_codec(d, spec, case):
    m = spec.items[0]
    how = d.choice(["toggle", "level", "unsorted", "tail", "cut", "raw_deflate", "empty"])
    if how == "toggle":
        m.zlib = not m.zlib
        return f"metadata stored {'zlib' if m.zlib else 'plain'}", True, True
    if how == "level":
        m.zlib, m.level = True, d.int(0, 9)
        return f"metadata zlib level {m.level}", True, True
    if how == "unsorted":
        m.sort_keys = False
        return "metadata keys unsorted", True, True
    if how == "tail":
        m.zlib = True
        m.zlib_tail = d.bytes(d.choice([1, 4, 10]))
        return f"{len(m.zlib_tail)} byte(s) after the zlib stream", False, False
    if how == "cut":
        m.zlib = True
        m.zlib_cut = d.choice([1, 2, 4, 5])
        return f"zlib stream cut by {m.zlib_cut}", False, False
    if how == "raw_deflate":
        m.zlib = True
        m.text = None
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        spec.items[0] = RawSec(C.SECTION_METADATA_ZLIB, z.compress(m.json_bytes()) + z.flush())
        return "metadata as raw deflate without the zlib header", False, False
    spec.items[0] = RawSec(d.choice([C.SECTION_METADATA, C.SECTION_METADATA_ZLIB]), b"")
    return "empty metadata section", False, False



MUTATIONS = [Mutation("m.json_text", 5, "fields", m_json_text),
             Mutation("m.codec", 2, "fields", m_codec)]
