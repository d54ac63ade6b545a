"""Reading user inputs: IDX / IDX.gz (the MNIST layout), .npy and .npz arrays; what a file
is from its first bytes (`sniff`); array layouts to NCHW (`as_nchw`). Image files: images.py.

Every input is treated as written by an attacker. Sizes are computed with exact Python ints, a
header claiming more than `max_bytes` of data is refused before anything is read, data is read
(and inflated) in 1 MiB chunks so memory grows only with the bytes really there, and the result
is a view of that one buffer (byte-swapped in place when big-endian). Whatever goes wrong,
including what NumPy's header parser, gzip or zipfile raise, becomes one InputError line naming
the file and the problem.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import struct
import zipfile
import zlib

import numpy as np

from engine.errors import InputError
from formats.constants import MAGIC as PNN_MAGIC

# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/ describes the layout).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_INPUT_BYTES = 256 * 2**20  # array data read from one input file, by default (a phone)
MAX_NPZ_MEMBERS = 1024
_CD_BYTES_PER_MEMBER = 1024    # generous: a central directory entry is 46 bytes + name + extra
_CHUNK = 2**20
_NUMERIC_KINDS = "biuf"        # bool, int, uint, float: what images and labels can be
# What reading a hostile file can raise besides InputError. UnicodeDecodeError is a ValueError,
# BadGzipFile an OSError; RuntimeError covers zipfile's NotImplementedError (unsupported
# compression), "encrypted, password required" and RecursionError.
_READ_ERRORS = (OSError, EOFError, ValueError, OverflowError, MemoryError, RuntimeError,
                struct.error, zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile)


# ---- what a file is ---------------------------------------------------------------------------

_MAGICS = ((PNN_MAGIC, "pnn"), (b"\x93NUMPY", "npy"), (b"PK\x03\x04", "zip"),
           (b"PK\x05\x06", "zip"), (b"\x1f\x8b", "gzip"), (b"\xff\xd8\xff", "JPEG"),
           (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
           (b"BM", "BMP"), (b"GGUF", "gguf"))
_KINDS = {
    "pnn": "a .pnn model", "npy": "a .npy array", "npz": "an .npz archive of arrays",
    "gzip": "a gzip file", "idx": "an IDX file", "JPEG": "a JPEG image", "PNG": "a PNG image",
    "GIF": "a GIF image", "BMP": "a BMP image", "WEBP": "a WebP image",
    "PPM": "a PGM/PPM image", "onnx": "an ONNX model", "torch": "a PyTorch checkpoint",
    "tflite": "a TensorFlow Lite model", "gguf": "a GGUF model",
}
IMAGE_KINDS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP", "PPM"})
ARRAY_KINDS = frozenset({"npy", "npz", "gzip", "idx"})
FOREIGN_MODEL_KINDS = frozenset({"onnx", "torch", "tflite", "gguf"})


def sniff(path: str | os.PathLike) -> str | None:
    """What a file looks like from its first 16 bytes (and, for the formats whose bytes do not
    say, its name): a key of _KINDS, or None (unknown, empty, or unreadable)."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if ext == ".onnx":  # protobuf: no magic
        return "onnx"
    kind = next((k for magic, k in _MAGICS if head.startswith(magic)), None)
    if kind == "zip":
        return "torch" if ext in (".pt", ".pth", ".ckpt", ".bin") else "npz"
    if kind is None:
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            kind = "WEBP"
        elif head[4:8] == b"TFL3":
            kind = "tflite"
        elif len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" \
                and head[2:3] in b" \t\r\n#":
            kind = "PPM"
        elif len(head) >= 4 and head[:2] == b"\0\0" and head[2] in _IDX_DTYPES \
                and 1 <= head[3] <= 4:
            kind = "idx"
    return kind


def describe_kind(kind: str | None) -> str:
    """'a .npy array', 'a JPEG image', ... for a message."""
    return _KINDS.get(kind, "an unknown kind of file")


# ---- arrays --------------------------------------------------------------------------------

def read_idx(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES) -> np.ndarray:
    """Read an IDX or gzipped IDX file into a NumPy array of its stored shape (native order)."""
    path = os.fspath(path)
    with _reading(path), open(path, "rb") as raw:
        gz = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        with (gzip.GzipFile(fileobj=raw) if gz else raw) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise InputError(f"{path}: not an IDX file (bad magic {head.hex() or 'empty'})")
            ndim = head[3]
            if not 1 <= ndim <= 4:
                raise InputError(f"{path}: IDX file with {ndim} dimensions (expected 1-4)")
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise InputError(f"{path}: truncated IDX header")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            need = math.prod(dims) * dtype.itemsize  # exact: int64 products of dims can wrap
            if need > max_bytes:
                raise InputError(f"{path}: IDX header claims {_figure(need)} bytes of data, "
                                 f"over the limit of {max_bytes:,} bytes (max_bytes)")
            data = _read_exact(f, need, path, "IDX data")
        return _as_array(data, dtype, dims)


def read_array(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (and labels where the file has them) from .npy, .npz or IDX.

    An .npz may hold `x` (or `images`) and optionally `y` (or `labels`); otherwise its only
    array is taken. Returns (images, labels or None) without reshaping the images. At most
    `max_bytes` of array data are read from the file, images and labels together.
    """
    path = os.fspath(path)
    lower = path.lower()
    if not (lower.endswith(".npy") or lower.endswith(".npz")):
        return read_idx(path, max_bytes=max_bytes), None
    with _reading(path), open(path, "rb") as f:
        if lower.endswith(".npy"):
            return _read_npy(f, os.fstat(f.fileno()).st_size, path, max_bytes), None
        return _read_npz(f, path, max_bytes)


def _read_npz(f, path: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray | None]:
    # ZipFile builds an object per central directory entry before we could count them, so check
    # the end record it trusts first (its own helper, so both read the same record): its size
    # bounds how many entries ZipFile will parse.
    end = zipfile._EndRecData(f)
    if end:
        count, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
        if count > MAX_NPZ_MEMBERS or size > MAX_NPZ_MEMBERS * _CD_BYTES_PER_MEMBER:
            raise InputError(f"{path}: zip directory of {size:,} bytes for {count:,} members, "
                             f"over the limit of {MAX_NPZ_MEMBERS} members "
                             f"({MAX_NPZ_MEMBERS * _CD_BYTES_PER_MEMBER:,} bytes)")
    with zipfile.ZipFile(f) as z:
        infos = z.infolist()
        if len(infos) > MAX_NPZ_MEMBERS:
            raise InputError(f"{path}: {len(infos):,} zip members, over the limit of "
                             f"{MAX_NPZ_MEMBERS} members")
        members = {i.filename[:-4]: i for i in infos if i.filename.endswith(".npy")}
        x_name = next((n for n in ("x", "images") if n in members), None)
        if x_name is None:
            if len(members) != 1:
                raise InputError(f"{path}: expected arrays 'x' (and optional 'y'), found "
                                 f"{sorted(members)}")
            x_name = next(iter(members))
        y_name = next((n for n in ("y", "labels") if n in members), None)

        def member(name: str, limit: int) -> np.ndarray:
            info = members[name]
            # zipfile inflates deflate in bounded pieces but bz2 / lzma a whole compressed read
            # at once (64 MiB of zeros is 79 bytes of bz2): np.savez writes neither.
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise InputError(f"{path}:{name}: zip compression method "
                                 f"{info.compress_type}; only stored and deflated are read")
            # file_size comes from the zip directory (the attacker's word): _read_npy only uses
            # it to refuse early, and counts the bytes it really gets.
            with z.open(info) as m:
                return _read_npy(m, info.file_size, f"{path}:{name}", limit)

        x = member(x_name, max_bytes)
        return x, (member(y_name, max_bytes - x.nbytes) if y_name else None)


def _read_npy(f, size: int, source: str, max_bytes: int) -> np.ndarray:
    """One .npy stream whose header is checked against the limit and the bytes there."""
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise InputError(f"{source}: unsupported .npy version {version}")
    try:  # NumPy evaluates the header text: hostile text raises anything from ValueError to
        # OverflowError, SyntaxError, tokenize.TokenError or RecursionError
        shape, fortran, dtype = read_header(f)
    except Exception as e:
        raise InputError(f"{source}: bad .npy header: {_reason(e)}") from None
    if dtype.kind not in _NUMERIC_KINDS:  # structured and subarray dtypes are kind "V"
        what = "Python objects" if dtype.hasobject else f"dtype {dtype}"
        raise InputError(f"{source}: holds {what}, not plain numbers")
    if len(shape) > 64:  # NumPy's own limit; also keeps the shape short enough to print
        raise InputError(f"{source}: header claims {len(shape)} dimensions (NumPy allows 64)")
    if any(type(d) is not int for d in shape):  # NumPy's parser lets True or 2.0 through
        raise InputError(f"{source}: bad .npy header: shape {shape} is not whole numbers")
    if any(d < 0 for d in shape):
        raise InputError(f"{source}: negative dimension in shape {shape}")
    need = math.prod(shape) * dtype.itemsize  # exact Python ints: no wrap, no float rounding
    if need > max_bytes:
        raise InputError(f"{source}: header claims {_figure(need)} bytes of data, over the "
                         f"limit of {max_bytes:,} bytes (max_bytes)")
    have = size - f.tell()
    if need > have:
        raise InputError(f"{source}: header claims shape {shape} of {dtype} ({need:,} bytes), "
                         f"but the file holds {have:,} bytes of data")
    data = _read_exact(f, need, source, "array data")
    return _as_array(data, dtype, shape, order="F" if fortran else "C")


def _read_exact(f, need: int, source: str, what: str) -> bytearray:
    """Read `need` bytes in chunks: memory follows the bytes really there, not a header's word."""
    buf = bytearray()
    while len(buf) < need:
        chunk = f.read(min(_CHUNK, need - len(buf)))
        if not chunk:
            raise InputError(f"{source}: truncated {what} ({len(buf):,} of {need:,} bytes)")
        buf += chunk
    return buf


def _as_array(buf: bytearray, dtype: np.dtype, shape, order: str = "C") -> np.ndarray:
    """A view of `buf` (no copy), byte-swapped in place when stored in the other byte order."""
    a = np.frombuffer(buf, dtype=dtype)
    if not dtype.isnative:
        a = a.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return a.reshape(shape, order=order)


@contextlib.contextmanager
def _reading(path: str):
    """Turn whatever reading a hostile (or missing) file raises into one line naming it."""
    try:
        yield
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except _READ_ERRORS as e:
        raise InputError(f"{path}: cannot read: {_reason(e)}") from None


def _reason(e: BaseException) -> str:
    """An exception as a short printable line (OSError without the path we already name)."""
    text = " ".join(str(getattr(e, "strerror", None) or e).split()) or type(e).__name__
    text = "".join(c if c.isprintable() else "?" for c in text)  # no escapes from the file
    return text if len(text) <= 200 else text[:200] + "..."


def _figure(n: int) -> str:
    """A byte count for a message; a header can claim 10**400, too long to print in full."""
    return f"{n:,}" if n < 10**30 else f"about 10**{len(str(n)) - 1}"


def as_nchw(images: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """Bring HW, CHW, NHW or NCHW images to (N, C, H, W) for a model whose input is (C, H, W);
    channels-last HWC and NHWC too (NumPy's view of a PIL image, TFLite's layout) when the
    shape says so unambiguously. A view: values are not converted."""
    c, h, w = input_shape
    x = np.asarray(images)
    if x.dtype.kind not in _NUMERIC_KINDS:  # also structured ("V"), str, complex, datetime
        raise InputError(f"{source}: images of dtype {x.dtype} are not plain numbers")
    first = x.ndim >= 2 and x.shape[-2:] == (h, w)
    if not first and x.ndim in (3, 4) and x.shape[-3:] == (h, w, c):  # HWC, NHWC
        return np.moveaxis(x.reshape(-1, h, w, c), -1, 1)
    if first:
        if x.ndim == 2:
            return x.reshape(1, 1, h, w) if c == 1 else _bad(x, input_shape, source)
        if x.ndim == 3:
            if x.shape[0] == c and c != 1:
                return x.reshape(1, c, h, w)
            if c == 1:  # (N, H, W) batch of grey images, or one (1, H, W) image
                return x.reshape(-1, 1, h, w)
        if x.ndim == 4 and x.shape[1] == c:
            return x
    return _bad(x, input_shape, source)


def _bad(x: np.ndarray, input_shape, source: str):
    c, h, w = input_shape
    raise InputError(f"{source}: images of shape {tuple(x.shape)} do not fit the model's input "
                     f"(C, H, W) = ({c}, {h}, {w}); expected HW, CHW, NHW or NCHW (or HWC, NHWC)")
