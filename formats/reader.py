"""Read a .pnn file: validate header, section table and metadata at open; decode a tensor on
request. Every number read from the file is checked against the bytes that remain and against
the limits in formats.constants before anything is allocated from it."""

from __future__ import annotations

import builtins
import os
import zlib
from dataclasses import dataclass

import numpy as np

from formats import huffman, metadata, relindex
from formats.constants import (
    CODEBOOK_HEAD,
    DIM,
    ENCODING_F16,
    ENCODING_F32,
    ENCODING_NAMES,
    FLAGS_KNOWN,
    FLAGS_REQUIRED_MASK,
    HEADER,
    HEADER_CRC_OFFSET,
    HEADER_SIZE,
    MAGIC,
    MAX_BITS,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MAX_REL_BITS,
    MAX_SECTIONS,
    METADATA_KINDS,
    MIN_BITS,
    MIN_REL_BITS,
    MIN_ROWS_ALLOWANCE,
    MODE_NAMES,
    MODE_PER_CHANNEL,
    MODE_SCALED,
    ROWS_PER_BYTE,
    SECTION_ALIGN,
    SECTION_ENTRY,
    SECTION_METADATA_ZLIB,
    SECTION_OPTIONAL_BIT,
    SECTION_TENSOR,
    TENSOR_HEAD,
    TENSOR_NAME_LEN,
    VERSION_MAJOR,
    VERSION_MINOR,
    VERSION_PREFIX,
)
from formats.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LayoutError,
    TruncatedError,
    UnsupportedVersionError,
)
from formats.tensors import CodebookTensor, code_dtype, index_dtype


@dataclass(frozen=True)
class TensorInfo:
    """What a tensor is, without decoding it."""

    name: str
    encoding: str               # "f32" | "f16" | "codebook"
    shape: tuple[int, ...]
    nnz: int                    # stored nonzeros; = size for dense encodings
    bits: int | None            # codebook code width
    rel_bits: int | None        # relative-index width
    codebook_mode: str | None   # "shared" | "per_channel" | "scaled"
    nbytes: int                 # bytes of its section on disk
    offset: int                 # where its section starts in the file


@dataclass(frozen=True)
class _Section:
    index: int
    kind: int
    offset: int
    length: int
    crc: int


class _Cursor:
    """Reads fields from one section's bytes; errors carry the absolute file offset."""

    def __init__(self, buf: bytes, base: int) -> None:
        self.buf, self.pos, self.base = buf, 0, base

    @property
    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.left:
            raise LayoutError(f"{what} needs {n} bytes but the section has {self.left} left",
                              offset=self.base + self.pos)
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, st, what: str) -> tuple:
        return st.unpack(self.take(st.size, what))

    def floats(self, n: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * n, what), dtype="<f4").astype(np.float32)

    def fail(self, reason: str, cls=LayoutError) -> FormatError:
        return cls(reason, offset=self.base + self.pos)


def _open_bytes(path: str):
    try:
        return builtins.open(path, "rb")
    except FileNotFoundError:
        raise FormatError("file does not exist", path=path) from None
    except IsADirectoryError:
        raise FormatError("is a directory, not a .pnn file", path=path) from None
    except PermissionError:
        raise FormatError("cannot be read: permission denied", path=path) from None
    except OSError as e:
        raise FormatError(f"cannot be read: {e.strerror or e}", path=path) from None


class PnnFile:
    """An open .pnn file. Holds no file handle between calls; `with` is supported."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self._infos: dict[str, TensorInfo] = {}
        try:
            with _open_bytes(self.path) as f:
                if not os.path.isfile(self.path):
                    raise FormatError("is not a regular file", path=self.path)
                actual = os.fstat(f.fileno()).st_size
                self._read_header(f, actual)
                self._read_table(f)
                self._read_metadata(f)
        except FormatError as e:
            raise e.located(path=self.path) from None

    # -- context manager: nothing to release, but `with formats.open(p) as f:` reads well
    def __enter__(self) -> PnnFile:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"PnnFile({self.path!r}, version={self.version}, tensors={len(self.tensor_names)})"

    # -- open-time validation ------------------------------------------------------------------

    def _read_header(self, f, actual: int) -> None:
        head = f.read(HEADER_SIZE)
        if len(head) < len(MAGIC):
            if MAGIC.startswith(head):
                raise TruncatedError(f"file is {len(head)} bytes, shorter than a header",
                                     offset=len(head))
            raise BadMagicError("not a .pnn file (bad magic)", offset=0)
        if head[:len(MAGIC)] != MAGIC:
            raise BadMagicError("not a .pnn file (bad magic)", offset=0)
        if len(head) < VERSION_PREFIX.size:
            raise TruncatedError("file ends inside the header", offset=len(head))
        _, major, minor = VERSION_PREFIX.unpack(head[:VERSION_PREFIX.size])
        if major != VERSION_MAJOR:
            raise UnsupportedVersionError(
                f"format version {major}.{minor} is not supported by this reader "
                f"(reads {VERSION_MAJOR}.x, up to {VERSION_MAJOR}.{VERSION_MINOR} fully)",
                offset=len(MAGIC))
        if len(head) < HEADER_SIZE:
            raise TruncatedError("file ends inside the header", offset=len(head))
        (_, _, minor, flags, count, reserved, file_size, table_crc,
         head_crc) = HEADER.unpack(head)
        if zlib.crc32(head[:HEADER_CRC_OFFSET]) != head_crc:
            raise ChecksumError("header checksum mismatch", offset=HEADER_CRC_OFFSET)
        unknown = flags & FLAGS_REQUIRED_MASK & ~FLAGS_KNOWN
        if unknown:
            raise UnsupportedVersionError(
                f"file needs features this reader lacks (flags {unknown:#x}; file version "
                f"{major}.{minor}, reader {VERSION_MAJOR}.{VERSION_MINOR})", offset=12)
        if reserved:
            raise LayoutError("reserved header field is not zero", offset=20)
        if actual < file_size:
            raise TruncatedError(f"file is {actual} bytes but its header says {file_size}",
                                 offset=actual)
        if actual > file_size:
            raise LayoutError(f"{actual - file_size} bytes after the declared end of file",
                              offset=file_size)
        if not 1 <= count <= MAX_SECTIONS:
            raise LayoutError(f"section count {count} outside 1..{MAX_SECTIONS}", offset=16)
        if HEADER_SIZE + count * SECTION_ENTRY.size > file_size:
            raise LayoutError(f"a table of {count} sections does not fit in {file_size} bytes",
                              offset=16)
        self.version = (major, minor)
        self.flags = flags
        self.file_size = file_size
        self._count = count
        self._table_crc = table_crc

    def _read_table(self, f) -> None:
        size = self._count * SECTION_ENTRY.size
        raw = f.read(size)
        if len(raw) < size:
            raise TruncatedError("file ends inside the section table",
                                 offset=HEADER_SIZE + len(raw))
        if zlib.crc32(raw) != self._table_crc:
            raise ChecksumError("section table checksum mismatch", offset=HEADER_SIZE)
        table_end = HEADER_SIZE + size
        sections, prev_end = [], table_end
        for i in range(self._count):
            at = HEADER_SIZE + i * SECTION_ENTRY.size
            kind, r0, offset, length, crc, r1 = SECTION_ENTRY.unpack_from(
                raw, i * SECTION_ENTRY.size)
            if r0 or r1:
                raise LayoutError("reserved section-table field is not zero", section=i, offset=at)
            if kind not in (*METADATA_KINDS, SECTION_TENSOR) and not kind & SECTION_OPTIONAL_BIT:
                raise UnsupportedVersionError(
                    f"required section type {kind} is unknown to this reader (file version "
                    f"{self.version[0]}.{self.version[1]}, reader "
                    f"{VERSION_MAJOR}.{VERSION_MINOR})", section=i, offset=at)
            if offset % SECTION_ALIGN:
                raise LayoutError(f"section offset {offset} is not a multiple of "
                                  f"{SECTION_ALIGN}", section=i, offset=at)
            if offset < prev_end:
                raise LayoutError(f"section starts at {offset}, overlapping what ends at "
                                  f"{prev_end}", section=i, offset=at)
            if offset > self.file_size or length > self.file_size - offset:
                raise LayoutError(f"section [{offset}, {offset + length}) runs past the end "
                                  f"of the {self.file_size}-byte file", section=i, offset=at)
            prev_end = offset + length
            sections.append(_Section(i, kind, offset, length, crc))
        if sections[0].kind not in METADATA_KINDS:
            raise LayoutError("section 0 is not the metadata", section=0, offset=HEADER_SIZE)
        if any(s.kind in METADATA_KINDS for s in sections[1:]):
            raise LayoutError("more than one metadata section", offset=HEADER_SIZE)
        self._sections = sections

    def _read_metadata(self, f) -> None:
        sec = self._sections[0]
        if sec.length > MAX_METADATA_BYTES:
            raise LayoutError(f"metadata of {sec.length} bytes exceeds the limit of "
                              f"{MAX_METADATA_BYTES}", section=0, offset=sec.offset)
        raw = self._read_section(sec, f)
        try:
            doc = metadata.parse(metadata.inflate(raw) if sec.kind == SECTION_METADATA_ZLIB
                                 else raw)
        except FormatError as e:
            raise e.located(section=0, offset=sec.offset) from None

        def bad(reason: str) -> LayoutError:
            return LayoutError(f"malformed metadata: {reason}", section=0, offset=sec.offset)

        if not isinstance(doc, dict) or not isinstance(doc.get("metadata"), dict) \
                or not isinstance(doc.get("tensors"), list):
            raise bad("expected an object with 'metadata' (object) and 'tensors' (list)")
        by_name: dict[str, _Section] = {}
        for entry in doc["tensors"]:
            if not isinstance(entry, dict):
                raise bad("tensor entries must be objects")
            name, index = entry.get("name"), entry.get("section")
            if not isinstance(name, str) or not name or name in by_name:
                raise bad(f"tensor name {name!r} is missing, empty or repeated")
            if isinstance(index, bool) or not isinstance(index, int) \
                    or not 1 <= index < len(self._sections) \
                    or self._sections[index].kind != SECTION_TENSOR:
                raise bad(f"tensor {name!r} names section {index!r}, not a tensor section")
            by_name[name] = self._sections[index]
        listed = {s.index for s in by_name.values()}
        if len(listed) != len(by_name) or any(
                s.kind == SECTION_TENSOR and s.index not in listed for s in self._sections):
            raise bad("tensor sections and the tensor list do not match one to one")
        self.metadata: dict = doc["metadata"]
        self.tensor_names: list[str] = list(by_name)
        self._by_name = by_name

    def _read_section(self, sec: _Section, f=None) -> bytes:
        if f is None:
            with _open_bytes(self.path) as g:
                return self._read_section(sec, g)
        f.seek(sec.offset)
        raw = f.read(sec.length)
        if len(raw) < sec.length:
            raise TruncatedError(f"file ends inside a section of {sec.length} bytes",
                                 section=sec.index, offset=sec.offset + len(raw))
        if zlib.crc32(raw) != sec.crc:
            raise ChecksumError("checksum mismatch", section=sec.index, offset=sec.offset)
        return raw

    # -- tensors --------------------------------------------------------------------------------

    def _section_of(self, name: str) -> _Section:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None

    def info(self, name: str) -> TensorInfo:
        """Describe one tensor (reads and checks its section, decodes nothing)."""
        if name not in self._infos:
            sec = self._section_of(name)
            try:
                info, _ = _parse(_Cursor(self._read_section(sec), sec.offset), name, sec)
            except FormatError as e:
                raise e.located(path=self.path, section=sec.index, tensor=name) from None
            self._infos[name] = info
        return self._infos[name]

    def tensor(self, name: str) -> np.ndarray | CodebookTensor:
        """Decode one tensor: reads only its section, verifies its CRC, decodes."""
        sec = self._section_of(name)
        try:
            info, value = _parse(_Cursor(self._read_section(sec), sec.offset), name, sec,
                                 decode=True)
        except FormatError as e:
            raise e.located(path=self.path, section=sec.index, tensor=name) from None
        self._infos.setdefault(name, info)
        return value

    def tensors(self) -> dict[str, np.ndarray | CodebookTensor]:
        """Every tensor, in file order."""
        return {name: self.tensor(name) for name in self.tensor_names}


def open_pnn(path: str | os.PathLike) -> PnnFile:
    """Open and validate a .pnn file (exported as `formats.open`)."""
    return PnnFile(path)


# ---- one tensor section --------------------------------------------------------------------------


def _parse(cur: _Cursor, expected: str, sec: _Section, decode: bool = False):
    (name_len,) = cur.unpack(TENSOR_NAME_LEN, "tensor name length")
    if not 1 <= name_len <= MAX_NAME_BYTES:
        raise cur.fail(f"tensor name length {name_len} outside 1..{MAX_NAME_BYTES}")
    try:
        name = cur.take(name_len, "tensor name").decode("utf-8")
    except UnicodeDecodeError:
        raise cur.fail("tensor name is not UTF-8") from None
    if name != expected:
        raise cur.fail(f"section holds tensor {name!r}, the metadata says {expected!r}")
    encoding, ndim, reserved = cur.unpack(TENSOR_HEAD, "tensor header")
    if reserved:
        raise cur.fail("reserved tensor-header field is not zero")
    if encoding not in ENCODING_NAMES:
        raise cur.fail(f"tensor encoding {encoding} is unknown to this reader",
                       UnsupportedVersionError)
    if ndim > MAX_NDIM:
        raise cur.fail(f"{ndim} dimensions, limit {MAX_NDIM}")
    shape = tuple(cur.unpack(DIM, "dimension")[0] for _ in range(ndim))
    size = span = 1  # span counts a zero dim as 1: numpy refuses (0, 2^31, 2^31) as too big
    for d in shape:
        if d > MAX_DIM:
            raise cur.fail(f"dimension {d} exceeds {MAX_DIM}")
        size *= d
        span *= max(d, 1)
    if span > MAX_ELEMENTS:
        raise cur.fail(f"shape {shape} spans {span} elements (zero dims counted as 1), "
                       f"limit {MAX_ELEMENTS}")

    if encoding in (ENCODING_F32, ENCODING_F16):
        itemsize = 4 if encoding == ENCODING_F32 else 2
        if cur.left != size * itemsize:
            raise cur.fail(f"{ENCODING_NAMES[encoding]} data of shape {shape} needs "
                           f"{size * itemsize} bytes, the section has {cur.left}")
        info = TensorInfo(name, ENCODING_NAMES[encoding], shape, size, None, None, None,
                          sec.length, sec.offset)
        if not decode:
            return info, None
        src = "<f4" if encoding == ENCODING_F32 else "<f2"
        dst = np.float32 if encoding == ENCODING_F32 else np.float16
        data = np.frombuffer(cur.take(size * itemsize, "data"), dtype=src)
        return info, data.astype(dst).reshape(shape)

    # codebook
    if ndim < 1:
        raise cur.fail("a codebook tensor needs at least one dimension")
    rows = shape[0]
    max_rows = ROWS_PER_BYTE * sec.length + MIN_ROWS_ALLOWANCE
    if rows > max_rows:  # indptr costs 8 bytes a row: rows must be paid for in bytes
        raise cur.fail(f"{rows} rows exceed the limit of {max_rows} for a section of "
                       f"{sec.length} bytes ({ROWS_PER_BYTE} per byte + {MIN_ROWS_ALLOWANCE})")
    (bits, mode, rel_bits, reserved, k, nnz, n_entries, code_len,
     rel_len) = cur.unpack(CODEBOOK_HEAD, "codebook header")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise cur.fail(f"code width {bits} outside {MIN_BITS}..{MAX_BITS}")
    if mode not in MODE_NAMES:
        raise cur.fail(f"codebook mode {mode} is unknown to this reader", UnsupportedVersionError)
    if not MIN_REL_BITS <= rel_bits <= MAX_REL_BITS:
        raise cur.fail(f"relative-index width {rel_bits} outside {MIN_REL_BITS}..{MAX_REL_BITS}")
    if reserved:
        raise cur.fail("reserved codebook-header field is not zero")
    if not 1 <= k <= 1 << bits:
        raise cur.fail(f"codebook size {k} outside 1..{1 << bits} for {bits}-bit codes")
    row_size = size // rows if rows else 0
    filler = (1 << rel_bits) - 1
    if nnz > size:
        raise cur.fail(f"{nnz} nonzeros in a tensor of {size} elements")
    if not nnz <= n_entries <= nnz + size // filler or (nnz == 0 and n_entries):
        raise cur.fail(f"{n_entries} relative-index entries impossible for {nnz} nonzeros "
                       f"in {size} elements")
    info = TensorInfo(name, "codebook", shape, nnz, bits, rel_bits, MODE_NAMES[mode],
                      sec.length, sec.offset)
    book_rows = rows if mode == MODE_PER_CHANNEL else 1
    book = cur.floats(book_rows * k, "codebook")
    scale = cur.floats(rows, "scale") if mode == MODE_SCALED else None
    at_tables = cur.base + cur.pos
    code_lengths = np.frombuffer(cur.take(k, "code-length table"), dtype=np.uint8)
    rel_lengths = np.frombuffer(cur.take(1 << rel_bits, "relative-index table"), dtype=np.uint8)
    code_stream = cur.take(code_len, "code stream")
    at_rel = cur.base + cur.pos
    rel_stream = cur.take(rel_len, "relative-index stream")
    if cur.left:
        raise cur.fail(f"{cur.left} stray bytes at the end of the section")
    try:
        huffman.check_lengths(code_lengths)
        huffman.check_lengths(rel_lengths)
    except FormatError as e:
        raise e.located(offset=at_tables) from None
    if not decode:
        return info, None
    try:
        codes = huffman.decode(code_stream, code_lengths, nnz)
    except FormatError as e:
        raise e.located(offset=at_rel - code_len) from None
    try:
        entries = huffman.decode(rel_stream, rel_lengths, n_entries)
        positions = relindex.decode_positions(entries, rel_bits, size)
    except FormatError as e:
        raise e.located(offset=at_rel) from None
    if positions.size != nnz:
        raise LayoutError(f"relative indices give {positions.size} nonzeros, header says {nnz}",
                          offset=at_rel)
    row_of = positions // row_size if row_size else positions
    # row r starts at the first nonzero of a row >= r (row_of ascends): O(rows log nnz)
    indptr = np.searchsorted(row_of, np.arange(rows + 1)).astype(np.int64, copy=False)
    indices = (positions - row_of * row_size).astype(index_dtype(row_size))
    value = CodebookTensor(
        shape=shape, indptr=indptr, indices=indices, codes=codes.astype(code_dtype(bits)),
        codebook=book.reshape(rows, k) if mode == MODE_PER_CHANNEL else book,
        scale=scale, bits=bits)
    return info, value
