"""Every number of the .pnn format, in one place (docs/FORMAT.md is the prose for them).

Readers and writers import from here; tests build hostile files from these same constants.
"""

from __future__ import annotations

import struct

# ---- identity ---------------------------------------------------------------------------------
# PNG-style magic: the high byte catches 7-bit transfers, \r\n and \n catch newline translation,
# \x1a stops `type` on DOS. Only MAGIC and the two version fields after it are stable across majors.
MAGIC = b"\x89PNN\r\n\x1a\n"
VERSION_MAJOR = 1           # a reader refuses any other major
VERSION_MINOR = 0           # a reader accepts any minor of its major

# ---- header: 40 bytes -------------------------------------------------------------------------
#   magic 8s | major u16 | minor u16 | flags u32 | section_count u32 | reserved u32 (0)
#   | file_size u64 | table_crc u32 | header_crc u32 (crc32 of the 36 bytes before it)
HEADER = struct.Struct("<8sHHIIIQII")
HEADER_SIZE = HEADER.size   # 40
HEADER_CRC_OFFSET = 36
VERSION_PREFIX = struct.Struct("<8sHH")  # the part every major keeps: magic, major, minor

# flags: the low 16 bits are "required" features (a reader refuses any it does not know), the
# high 16 bits are informational (ignored by readers that do not know them). None defined in 1.0.
FLAGS_REQUIRED_MASK = 0x0000FFFF
FLAGS_KNOWN = 0

# ---- section table: 32 bytes per entry, right after the header -------------------------------
#   type u32 | reserved u32 (0) | offset u64 | length u64 | crc32 u32 | reserved u32 (0)
SECTION_ENTRY = struct.Struct("<IIQQII")
SECTION_ENTRY_SIZE = SECTION_ENTRY.size  # 32

SECTION_METADATA = 1       # UTF-8 JSON
SECTION_TENSOR = 2
SECTION_METADATA_ZLIB = 3  # the same JSON, zlib-compressed (RFC 1950); what the writer emits
METADATA_KINDS = (SECTION_METADATA, SECTION_METADATA_ZLIB)
SECTION_OPTIONAL_BIT = 0x80000000  # a type with this bit set may be skipped if unknown
SECTION_ALIGN = 32                 # every section starts at a multiple of this; padding is zeros

# ---- tensor section ---------------------------------------------------------------------------
#   name_len u16 | name utf-8 | encoding u8 | ndim u8 | reserved u16 (0) | dims u64 * ndim | body
TENSOR_NAME_LEN = struct.Struct("<H")
TENSOR_HEAD = struct.Struct("<BBH")
DIM = struct.Struct("<Q")

ENCODING_F32 = 1
ENCODING_F16 = 2
ENCODING_CODEBOOK = 3
ENCODING_NAMES = {ENCODING_F32: "f32", ENCODING_F16: "f16", ENCODING_CODEBOOK: "codebook"}

# codebook body head (40 bytes):
#   bits u8 | mode u8 | rel_bits u8 | reserved u8 (0) | K u32 | nnz u64 | entry_count u64
#   | code_stream_len u64 | rel_stream_len u64
# then: codebook f32[K] or f32[O*K] | scale f32[O] (scaled only) | code lengths u8[K]
#       | rel lengths u8[2**rel_bits] | code stream | rel stream   (end of section exactly)
CODEBOOK_HEAD = struct.Struct("<BBBBIQQQQ")

MODE_SHARED = 1
MODE_PER_CHANNEL = 2
MODE_SCALED = 3
MODE_NAMES = {MODE_SHARED: "shared", MODE_PER_CHANNEL: "per_channel", MODE_SCALED: "scaled"}

# ---- limits a reader enforces before it allocates anything ------------------------------------
MAX_SECTIONS = 1 << 20
MAX_METADATA_BYTES = 4 << 20        # 4 MiB of JSON (MobileNetV2's graph and labels: ~0.1 MiB)
MAX_METADATA_DEPTH = 64             # nesting levels (a graph needs 6)
MAX_METADATA_VALUES = 1 << 18       # containers and values (a 1,000-node graph: ~20,000)
MAX_NAME_BYTES = 1024
MAX_NDIM = 8
MAX_DIM = (1 << 31) - 1
MAX_ELEMENTS = 1 << 31              # elements of one tensor
MIN_BITS, MAX_BITS = 1, 16          # codebook code width
MIN_REL_BITS, MAX_REL_BITS = 1, 16  # relative-index width
AUTO_REL_BITS = range(1, 13)        # widths the writer tries when rel_bits=None
MAX_CODE_LEN = 24                   # Huffman code length limit (decoder peeks this many bits)
# Rows cost a reader 8 bytes each (the CSR indptr) however few bytes store them, so a codebook
# section may declare at most ROWS_PER_BYTE * its length + MIN_ROWS_ALLOWANCE rows (reader and
# writer alike). Any layer of <= 65,536 rows passes; why that is enough: docs/FORMAT.md.
ROWS_PER_BYTE = 16
MIN_ROWS_ALLOWANCE = 1 << 16
