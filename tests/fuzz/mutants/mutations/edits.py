"""What every mutation family shares: the mutation record, edge-value pools, picking a
section, byte damage."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tests.fuzz.mutants.sections import FileSpec, TensorSec


@dataclass(frozen=True)
class Mutation:
    """One entry of the mutation table. `edits` says what `fn` edits:
    "fields": fn(d, spec, case) -> (detail, same, valid), editing the FileSpec in place;
    "bytes": fn(d, blob, case) -> (blob, detail, same, valid), on the assembled file.
    `same`: if the file loads, its content must be the original's; `valid`: the file is valid
    by docs/FORMAT.md, so it must load."""

    name: str
    weight: int
    edits: str
    fn: Callable


INTERESTING = [0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 63, 64, 127, 128, 255,
               256, 1023, 1024, 1025, 4095, 65535, 65536, 2**20, 2**20 + 1, 2**24, 2**31 - 1,
               2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, 2**63, 2**64 - 1]


def interesting_int(d, width: int, current: int | None = None) -> int:
    top = (1 << width) - 1
    pool = [v for v in INTERESTING if v <= top]
    if current is not None:
        pool += [v for v in (current - 1, current + 1, current + 2, current * 2, current // 2,
                             current ^ 1, current + 8, current - 8) if 0 <= v <= top]
    if d.bool(0.15):
        return d.int(0, top)
    v = d.choice(pool)
    return v if v != current or d.bool(0.2) else (v + 1) & top


NAN, INF = float("nan"), float("inf")


def tensor_items(spec: FileSpec, body: str | None = None) -> list[int]:
    return [i for i, it in enumerate(spec.items)
            if isinstance(it, TensorSec) and (body is None or it.body == body)]


def pick_sec(d, spec: FileSpec, body: str | None = None) -> TensorSec | None:
    idx = tensor_items(spec, body)
    return spec.items[d.choice(idx)] if idx else None


FLOAT_POOL = [0.0, -0.0, 1.0, -1.0, 0.5, 1e-45, 1e-38, 3.4e38, 65504.0, NAN, INF, -INF, 1e10]


def floats(d, n: int) -> bytes:
    if n > 64:  # many: one drawn seed, NumPy does the rest
        rng = np.random.default_rng(d.int(0, 2**32 - 1))
        v = (rng.integers(-1000, 1001, n) / 7).astype("<f4")
        special = rng.random(n) < 0.5
        v[special] = np.array(FLOAT_POOL, "<f4")[rng.integers(0, len(FLOAT_POOL),
                                                              int(special.sum()))]
        return v.tobytes()
    out = [d.choice(FLOAT_POOL) if d.bool(0.5) else d.int(-1000, 1000) / 7 for _ in range(n)]
    return struct.pack(f"<{n}f", *out)


def mutate_bytes(d, b: bytes, what: str) -> tuple[bytes, str]:
    """Byte-level damage to `b`: flip / set / insert / delete / truncate / append / splice."""
    b = bytearray(b)
    how = d.weighted([(5, "flip"), (3, "set"), (2, "insert"), (2, "delete"), (2, "truncate"),
                      (1, "append"), (1, "splice")])
    if not b and how in ("flip", "set", "delete", "truncate", "splice"):
        how = "append"
    if how == "flip":
        spots = []
        for _ in range(d.weighted([(6, 1), (2, 2), (1, 4), (1, 8)])):
            i, bit = d.int(0, len(b) - 1), d.int(0, 7)
            b[i] ^= 1 << bit
            spots.append(f"{i}.{bit}")
        return bytes(b), f"{what}: flip bit(s) {','.join(spots)}"
    if how == "set":
        i = d.int(0, len(b) - 1)
        n = min(len(b) - i, d.choice([1, 1, 2, 4, 8]))
        v = d.choice([b"\x00", b"\xff", b"\x7f", b"\x80", None])
        new = (v * n) if v else d.bytes(n)
        b[i:i + n] = new
        return bytes(b), f"{what}: set {n} byte(s) at {i} to {new.hex()}"
    if how == "insert":
        i = d.int(0, len(b))
        new = d.bytes(d.choice([1, 1, 2, 3, 4, 8, 31, 32, 33]))
        b[i:i] = new
        return bytes(b), f"{what}: insert {len(new)} byte(s) at {i}"
    if how == "delete":
        i = d.int(0, len(b) - 1)
        n = min(len(b) - i, d.choice([1, 1, 2, 3, 4, 8, 32]))
        del b[i:i + n]
        return bytes(b), f"{what}: delete {n} byte(s) at {i}"
    if how == "truncate":
        n = d.int(0, len(b) - 1)
        return bytes(b[:n]), f"{what}: truncate to {n} of {len(b)} bytes"
    if how == "append":
        new = d.bytes(d.choice([1, 2, 7, 8, 32, 100]))
        return bytes(b) + new, f"{what}: append {len(new)} byte(s)"
    i, j = d.int(0, len(b) - 1), d.int(0, len(b) - 1)
    n = min(len(b) - max(i, j), d.choice([1, 2, 4, 8, 16]))
    b[j:j + n] = b[i:i + n]
    return bytes(b), f"{what}: copy {n} byte(s) from {i} to {j}"



def noop(d, spec, case):
    return "no mutation (control)", True, True


MAX_MADE = 1 << 18  # values a mutation may generate from (possibly mutated) dims


def bounded(n: int) -> int:
    """n, or ValueError (mutate() then undoes the edit) when a stacked edit made the dims too
    big to build a body for."""
    if n > MAX_MADE:
        raise ValueError(f"{n} values to generate")
    return n
