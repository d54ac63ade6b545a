"""Write a .pnn file: encode every tensor in memory, then replace the target atomically."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zlib

import numpy as np

from formats import huffman, relindex
from formats.constants import (
    AUTO_REL_BITS,
    CODEBOOK_HEAD,
    DIM,
    ENCODING_CODEBOOK,
    ENCODING_F16,
    ENCODING_F32,
    FLAGS_KNOWN,
    HEADER,
    HEADER_CRC_OFFSET,
    HEADER_SIZE,
    MAGIC,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MAX_REL_BITS,
    MAX_SECTIONS,
    MIN_REL_BITS,
    MIN_ROWS_ALLOWANCE,
    MODE_PER_CHANNEL,
    MODE_SCALED,
    MODE_SHARED,
    ROWS_PER_BYTE,
    SECTION_ALIGN,
    SECTION_ENTRY,
    SECTION_METADATA_ZLIB,
    SECTION_TENSOR,
    TENSOR_HEAD,
    TENSOR_NAME_LEN,
    VERSION_MAJOR,
    VERSION_MINOR,
)
from formats.errors import FormatError
from formats.metadata import check_shape as check_metadata_shape
from formats.tensors import CodebookTensor


def write(path: str | os.PathLike, metadata: dict, tensors: dict, *,
          rel_bits: int | None = None) -> int:
    """Write `metadata` (JSON-able dict) and `tensors` (name -> float32/float16 ndarray or
    CodebookTensor, file order = dict order) to `path`; return the file size in bytes.

    rel_bits=None picks, per tensor, the relative-index width in 1..12 whose Huffman-coded
    stream plus table is smallest; an int in 1..16 forces it. Same inputs -> identical bytes.
    Nothing at `path` changes unless the whole file was written (temp file, fsync, replace).
    """
    path = os.fspath(path)
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    if rel_bits is not None and (isinstance(rel_bits, bool) or not isinstance(rel_bits, int)
                                 or not MIN_REL_BITS <= rel_bits <= MAX_REL_BITS):
        raise ValueError(f"rel_bits must be None or an int in {MIN_REL_BITS}..{MAX_REL_BITS}, "
                         f"got {rel_bits!r}")
    names = list(tensors)
    if len(names) + 1 > MAX_SECTIONS:
        raise ValueError(f"{len(names)} tensors exceed the limit of {MAX_SECTIONS - 1}")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        if len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(f"tensor name {name[:40]!r}... is longer than {MAX_NAME_BYTES} bytes")
    doc = {"metadata": metadata,
           "tensors": [{"name": n, "section": i + 1} for i, n in enumerate(names)]}
    try:
        meta = json.dumps(doc, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise ValueError(f"metadata is not JSON-able: {e}") from None
    if len(meta) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata JSON is {len(meta)} bytes, limit {MAX_METADATA_BYTES}")
    try:  # what a reader refuses is never written
        check_metadata_shape(meta)
    except FormatError as e:
        raise ValueError(e.reason) from None
    # Deflated: the graph's JSON was 5% of the LeNet-5 file and deflates to a third.
    sections = [(SECTION_METADATA_ZLIB, zlib.compress(meta, 9))]
    for name in names:
        try:
            body = encode_tensor(name, tensors[name], rel_bits)
        except (TypeError, ValueError) as e:
            raise type(e)(f"tensor {name!r}: {e}") from None
        sections.append((SECTION_TENSOR, body))
    blob = assemble(sections)
    atomic_write(path, blob)
    return len(blob)


# ---- tensors -----------------------------------------------------------------------------------


def _shape_bytes(name: str, encoding: int, shape: tuple[int, ...]) -> bytes:
    if len(shape) > MAX_NDIM:
        raise ValueError(f"{len(shape)} dimensions, limit {MAX_NDIM}")
    span = 1  # zero dims count as 1, as in the reader
    for d in shape:
        if not 0 <= d <= MAX_DIM:
            raise ValueError(f"dimension {d} outside 0..{MAX_DIM}")
        span *= max(d, 1)
    if span > MAX_ELEMENTS:
        raise ValueError(f"shape {tuple(shape)} spans {span} elements (zero dims counted as 1), "
                         f"limit {MAX_ELEMENTS}")
    raw = name.encode("utf-8")
    return (TENSOR_NAME_LEN.pack(len(raw)) + raw + TENSOR_HEAD.pack(encoding, len(shape), 0)
            + b"".join(DIM.pack(int(d)) for d in shape))


def encode_tensor(name: str, t, rel_bits: int | None = None) -> bytes:
    """The bytes of one tensor section (layout: docs/FORMAT.md, "Tensor section")."""
    if isinstance(t, CodebookTensor):
        return _encode_codebook(name, t, rel_bits)
    if not isinstance(t, np.ndarray):
        raise TypeError(f"expected a float32/float16 ndarray or a CodebookTensor, "
                        f"got {type(t).__name__}")
    if t.dtype == np.float32:
        encoding, dtype = ENCODING_F32, "<f4"
    elif t.dtype == np.float16:
        encoding, dtype = ENCODING_F16, "<f2"
    else:
        raise ValueError(f"dense tensors must be float32 or float16, got {t.dtype}")
    head = _shape_bytes(name, encoding, tuple(int(d) for d in t.shape))
    return head + np.ascontiguousarray(t, dtype=dtype).tobytes()


def _pick_rel_bits(positions: np.ndarray) -> tuple[int, np.ndarray]:
    """(width, code lengths) with the smallest coded stream + table; ties -> narrower."""
    best = None
    for b in AUTO_REL_BITS:
        hist = relindex.histogram(positions, b)
        lengths = huffman.code_lengths(hist)
        total = (huffman.encoded_bits(hist, lengths) + 7) // 8 + (1 << b)
        if best is None or total < best[0]:
            best = (total, b, lengths)
    return best[1], best[2]


def _encode_codebook(name: str, t: CodebookTensor, rel_bits: int | None) -> bytes:
    t.validate()
    shape = tuple(int(d) for d in t.shape)
    if t.scale is not None:
        mode = MODE_SCALED
    elif t.codebook.ndim == 2:
        mode = MODE_PER_CHANNEL
    else:
        mode = MODE_SHARED
    head = _shape_bytes(name, ENCODING_CODEBOOK, shape)
    k = int(t.codebook.shape[-1])
    rows = np.repeat(np.arange(t.rows, dtype=np.int64), np.diff(t.indptr))
    positions = rows * t.row_size + np.asarray(t.indices, dtype=np.int64)
    codes = np.asarray(t.codes).astype(np.int64)
    code_len = huffman.code_lengths(np.bincount(codes, minlength=k))
    code_stream = huffman.encode(codes, code_len)
    if rel_bits is None:
        rel_bits, rel_len = _pick_rel_bits(positions)
    else:
        rel_len = huffman.code_lengths(relindex.histogram(positions, rel_bits))
    entries = relindex.encode_positions(positions, rel_bits)
    rel_stream = huffman.encode(entries, rel_len)
    body = CODEBOOK_HEAD.pack(t.bits, mode, rel_bits, 0, k, t.nnz, entries.size,
                              len(code_stream), len(rel_stream))
    parts = [head, body, np.ascontiguousarray(t.codebook, dtype="<f4").tobytes()]
    if mode == MODE_SCALED:
        parts.append(np.ascontiguousarray(t.scale, dtype="<f4").tobytes())
    parts += [code_len.tobytes(), rel_len.tobytes(), code_stream, rel_stream]
    section = b"".join(parts)
    max_rows = ROWS_PER_BYTE * len(section) + MIN_ROWS_ALLOWANCE
    if t.rows > max_rows:  # the reader refuses it (docs/FORMAT.md, "Tensor section")
        raise ValueError(f"{t.rows} rows exceed the limit of {max_rows} for its "
                         f"{len(section)}-byte section ({ROWS_PER_BYTE} per byte + "
                         f"{MIN_ROWS_ALLOWANCE})")
    return section


# ---- the container -----------------------------------------------------------------------------


def _align(n: int) -> int:
    return -(-n // SECTION_ALIGN) * SECTION_ALIGN


def assemble(sections: list[tuple[int, bytes]], *, major: int = VERSION_MAJOR,
             minor: int = VERSION_MINOR, flags: int = FLAGS_KNOWN) -> bytes:
    """Header + section table + aligned, zero-padded sections (tests use it for odd files)."""
    pos = _align(HEADER_SIZE + SECTION_ENTRY.size * len(sections))
    table, layout = [], []
    for kind, data in sections:
        table.append(SECTION_ENTRY.pack(kind, 0, pos, len(data), zlib.crc32(data), 0))
        layout.append(pos)
        pos = _align(pos + len(data))
    file_size = layout[-1] + len(sections[-1][1]) if sections else pos
    table_bytes = b"".join(table)
    head = HEADER.pack(MAGIC, major, minor, flags, len(sections), 0, file_size,
                       zlib.crc32(table_bytes), 0)[:HEADER_CRC_OFFSET]
    out = bytearray(file_size)
    out[:HEADER_SIZE] = head + zlib.crc32(head).to_bytes(4, "little")
    out[HEADER_SIZE:HEADER_SIZE + len(table_bytes)] = table_bytes
    for (_, data), at in zip(sections, layout, strict=True):
        out[at:at + len(data)] = data
    return bytes(out)


def atomic_write(path: str | os.PathLike, blob: bytes) -> None:
    """Write `blob` to `path` through a temp file and a rename: readers see the old file or the
    whole new one, never half; a new file gets the umask's mode, a replaced one keeps its own."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
