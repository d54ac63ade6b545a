"""Reading user inputs: IDX / IDX.gz (the MNIST layout), .npy and .npz arrays.

Every reader checks what it reads against the bytes that are there, and raises InputError
naming the file and the problem instead of failing deep inside NumPy.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile

import numpy as np

from engine.errors import InputError

# IDX type byte -> big-endian dtype (http://yann.lecun.com/exdb/mnist/ describes the layout).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_INPUT_BYTES = 2**30  # refuse to read more than 1 GiB from one input file (a phone)


def _open_maybe_gzip(path: str):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX or gzipped IDX file into a NumPy array of its stored shape."""
    path = os.fspath(path)
    try:
        with _open_maybe_gzip(path) as f:
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
            need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
            if need > MAX_INPUT_BYTES:
                raise InputError(f"{path}: IDX header claims {need} bytes of data, over the "
                                 f"{MAX_INPUT_BYTES}-byte limit")
            data = f.read(need)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, FileNotFoundError):
            raise InputError(f"{path}: no such file") from None
        raise InputError(f"{path}: cannot read: {e}") from None
    if len(data) < need:
        raise InputError(f"{path}: truncated IDX data ({len(data)} of {need} bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_array(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read images (and labels where the file has them) from .npy, .npz or IDX.

    An .npz may hold `x` (or `images`) and optionally `y` (or `labels`); otherwise its only
    array is taken. Returns (images, labels or None) without reshaping the images.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            with open(path, "rb") as f:
                return _read_npy(f, os.path.getsize(path), path), None
        if lower.endswith(".npz"):
            return _read_npz(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{path}: not a readable NumPy file: {e}") from None
    return read_idx(path), None


def _read_npz(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    with zipfile.ZipFile(path) as z:
        members = {name[:-4]: name for name in z.namelist() if name.endswith(".npy")}
        x_name = next((n for n in ("x", "images") if n in members), None)
        if x_name is None:
            if len(members) != 1:
                raise InputError(f"{path}: expected arrays 'x' (and optional 'y'), found "
                                 f"{sorted(members)}")
            x_name = next(iter(members))
        y_name = next((n for n in ("y", "labels") if n in members), None)

        def member(name):
            with z.open(members[name]) as f:
                return _read_npy(f, z.getinfo(members[name]).file_size, f"{path}:{name}")

        return member(x_name), (member(y_name) if y_name else None)


def _read_npy(f, size: int, source: str) -> np.ndarray:
    """One .npy stream whose header is checked against the bytes there before allocating."""
    version = np.lib.format.read_magic(f)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read_header is None:
        raise InputError(f"{source}: unsupported .npy version {version}")
    shape, fortran, dtype = read_header(f)
    if dtype.hasobject:
        raise InputError(f"{source}: holds Python objects, not numbers")
    need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    have = size - f.tell()
    if need > min(have, MAX_INPUT_BYTES):
        raise InputError(f"{source}: header claims shape {shape} of {dtype} ({need} bytes), "
                         f"but the file holds {have} bytes of data")
    data = f.read(need)
    if len(data) < need:
        raise InputError(f"{source}: truncated array data ({len(data)} of {need} bytes)")
    order = "F" if fortran else "C"
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order).astype(
        dtype.newbyteorder("="), copy=False)


def as_nchw(images: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """Bring HW, CHW, NHW or NCHW images to (N, C, H, W) for a model whose input is (C, H, W)."""
    c, h, w = input_shape
    x = np.asarray(images)
    if x.ndim >= 2 and x.shape[-2:] == (h, w):
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
                     f"(C, H, W) = ({c}, {h}, {w}); expected HW, CHW, NHW or NCHW")
