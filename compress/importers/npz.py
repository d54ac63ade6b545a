"""Named weight arrays from an .npz (np.savez), as `dict[str, np.ndarray]`.

    tensors = read_npz("mobilenet_v2.npz")    # keys in the zoo's layout, e.g. torchvision's

The file is untrusted. Before NumPy reads anything: the zip directory is bounded and its names
plain (compress/importers/_zip.py), every member is a .npy whose header (shape, dtype) is
parsed and checked: numbers only (no pickled objects, no structured dtypes), the data it
declares present in the member's declared size, and all members together within `max_bytes`.
Then `np.load(..., allow_pickle=False)` reads the arrays from the same open file; zipfile
never inflates a member past its declared size, so the checked headers bound every allocation.
"""

from __future__ import annotations

import math
import os

import numpy as np

from compress.importers import _zip
from compress.importers.errors import CheckpointError, printable
from compress.importers.torch_pickle import MAX_BYTES

_NUMERIC_KINDS = "biuf"  # bool, int, uint, float


def read_npz(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES) -> dict[str, np.ndarray]:
    """name -> array for every member; CheckpointError (one line naming the file) otherwise."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            z = _zip.open_zip(f, source)
            total = 0
            for info in z.infolist():
                total += _check_member(z, info, source)
                if total > max_bytes:
                    raise CheckpointError(f"{source}: its arrays declare {total:,} bytes, over "
                                          f"the limit of {max_bytes:,} (max_bytes)")
            f.seek(0)
            with np.load(f, allow_pickle=False) as npz:
                return {name: np.asarray(npz[name]) for name in npz.files}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except MemoryError:
        raise
    except _zip.READ_ERRORS as e:
        raise CheckpointError(f"{source}: cannot read it as an .npz ({type(e).__name__}: "
                              f"{printable(str(e), 120)})") from None


def _check_member(z, info, source: str) -> int:
    """The bytes of array data member `info` declares, after checking its header."""
    what = f"{source}:{printable(info.filename)}"
    if not info.filename.endswith(".npy"):
        raise CheckpointError(f"{what}: not an .npy member (an .npz holds arrays only)")
    if info.compress_type not in (0, 8):  # stored, deflated: what np.savez(_compressed) writes
        raise CheckpointError(f"{what}: zip compression method {info.compress_type}")
    with z.open(info) as m:
        version = np.lib.format.read_magic(m)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read_header is None:
            raise CheckpointError(f"{what}: unsupported .npy version {version}")
        try:  # NumPy evaluates the header text: hostile text raises anything
            shape, fortran, dtype = read_header(m)  # NumPy >= 1.24 caps the text at 10 kB
        except Exception as e:
            raise CheckpointError(f"{what}: bad .npy header ({printable(str(e), 80)})") \
                from None
        header = m.tell()
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject:
        raise CheckpointError(f"{what}: holds {printable(str(dtype), 40)}, not plain numbers")
    if len(shape) > 64 or any(type(d) is not int or d < 0 for d in shape):
        raise CheckpointError(f"{what}: bad .npy header: shape {printable(str(shape), 60)}")
    need = math.prod(shape) * dtype.itemsize  # exact Python ints
    if need > info.file_size - header:
        raise CheckpointError(f"{what}: header declares {need:,} bytes of data, the member "
                              f"holds {max(info.file_size - header, 0):,}")
    return need
