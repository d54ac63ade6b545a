"""Zip archives from an attacker (torch.save's zip format, np.savez): counted before parsed,
read by name only, each entry's declared size checked against a limit before it is read."""

from __future__ import annotations

import struct
import zipfile
import zlib

from compress.importers.errors import CheckpointError, printable

MAX_ENTRIES = 65_536       # ResNet-152's checkpoint has about 1,000 storages
_CD_BYTES_PER_ENTRY = 1024  # a central directory entry is 46 bytes + its name + extras
# What reading a damaged archive raises besides our errors (RuntimeError: zipfile's
# NotImplementedError for other compressions, and "password required").
READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, struct.error, zlib.error,
               zipfile.BadZipFile, zipfile.LargeZipFile)


def open_zip(f, source: str) -> zipfile.ZipFile:
    """A ZipFile whose directory is bounded and whose every entry name is a plain relative
    name (an entry is only ever looked up by name, never extracted, but an archive naming
    '../x' or '/etc/x', or two entries alike, is not one torch or NumPy wrote)."""
    # ZipFile builds an object per directory entry before we could count them, so check the
    # end record it trusts first (with its own helper, so both read the same record).
    end = zipfile._EndRecData(f)
    if not end:
        raise CheckpointError(f"{source}: not a zip archive (no end of central directory)")
    count, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if count > MAX_ENTRIES or size > MAX_ENTRIES * _CD_BYTES_PER_ENTRY:
        raise CheckpointError(f"{source}: zip directory of {size:,} bytes for {count:,} "
                              f"entries, over the limit of {MAX_ENTRIES:,} entries")
    z = zipfile.ZipFile(f)
    seen = set()
    for info in z.infolist():
        name = info.filename
        parts = name.split("/")
        if (not name or name in seen or name.startswith("/") or "\\" in name or "\0" in name
                or ":" in parts[0] or any(p in ("", ".", "..") for p in parts[:-1])):
            raise CheckpointError(f"{source}: zip entry name {printable(name)!r} is "
                                  f"{'repeated' if name in seen else 'not a plain relative name'}")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{source}: zip entry {printable(name)!r} is encrypted")
    return z


def read_entry(z: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, source: str) -> bytes:
    """The entry's bytes, refused before reading when it declares more than `limit`."""
    what = f"{source}:{printable(info.filename)}"
    # zipfile inflates deflate in bounded pieces but bz2 / lzma a whole compressed read at
    # once (64 MiB of zeros is 79 bytes of bz2): torch and np.savez write neither.
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise CheckpointError(f"{what}: zip compression method {info.compress_type}; only "
                              f"stored and deflated entries are read")
    if info.file_size > limit:
        raise CheckpointError(f"{what}: declares {info.file_size:,} bytes, over the limit of "
                              f"{limit:,}")
    # ZipExtFile stops at the declared size (a deflate bomb inflates no further) and checks
    # the CRC at the end (a bomb, or any other damage, fails it).
    with z.open(info) as m:
        data = m.read(info.file_size)
        if len(data) != info.file_size or m.read(1):
            raise CheckpointError(f"{what}: holds {len(data):,} bytes, its directory entry "
                                  f"says {info.file_size:,}")
    return data
