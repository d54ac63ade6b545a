"""What a torch.save pickle may hold, as inert stand-ins of ours (see safe_pickle.py).

`GLOBALS` is the whole vocabulary: collections.OrderedDict, torch._utils' tensor and
parameter rebuilders, torch.Size and the storage types of real numbers. Each maps to a
function of ours that checks its arguments and returns a description (`TensorRef`: a view
of a `Storage`); no torch object is ever made. `Storages` is the persistent_load that checks
each storage id. Every index a tensor reads is proven inside its storage's declared elements
here, with exact integers; the bytes behind them are checked by the reader
(compress/importers/torch_checkpoint.py).
"""

from __future__ import annotations

import math

import numpy as np

from compress.importers.errors import CheckpointError, UnsafePickleError, printable
from compress.importers.safe_pickle import Call, Inert, StateDict, ordered_dict

MAX_BYTES = 2 << 30   # storage bytes read, and array bytes made, per checkpoint by default
MAX_NDIM = 32

# Storage type -> (element dtype as stored, little-endian). bfloat16 is read as its 16 bits.
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2",
    "BFloat16Storage": "<u2", "LongStorage": "<i8", "IntStorage": "<i4",
    "ShortStorage": "<i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "u1",
}


class StorageType(Inert):
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, np.dtype(dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class Storage(Inert):
    """A storage the pickle refers to: `numel` elements of `stype` from element `start` of the
    stored storage `key` (start > 0 only for legacy storage views)."""

    __slots__ = ("key", "stype", "start", "numel")

    def __init__(self, key, stype, start, numel):
        self.key, self.stype, self.start, self.numel = key, stype, start, numel

    def __repr__(self) -> str:
        return f"storage {self.key}"


class TensorRef(Inert):
    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def __repr__(self) -> str:
        return f"a tensor of {self.storage!r}"


def _ints(v, what: str, ndim: int | None = None) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or len(v) > MAX_NDIM \
            or any(type(d) is not int or d < 0 for d in v):
        raise CheckpointError(f"tensor {what} {printable(v)} is not a tuple of at most "
                              f"{MAX_NDIM} non-negative integers")
    if ndim is not None and len(v) != ndim:
        raise CheckpointError(f"tensor has {ndim} sizes but {len(v)} strides")
    return tuple(v)


def _rebuild_tensor(storage, offset, size, stride, *rest) -> TensorRef:
    """torch._utils._rebuild_tensor(_v2): a view of a storage, every index proven in bounds."""
    if not isinstance(storage, Storage):
        raise CheckpointError(f"tensor built on {printable(storage)}, not a storage")
    if type(offset) is not int or offset < 0:
        raise CheckpointError(f"tensor storage offset {printable(offset)}")
    shape = _ints(size, "size")
    strides = _ints(stride, "stride", len(shape))
    if rest:  # _v2: requires_grad, backward_hooks[, metadata]
        if len(rest) not in (2, 3) or not isinstance(rest[0], bool):
            raise CheckpointError("tensor rebuilt with unexpected arguments")
        _no_hooks(rest[1])
        if len(rest) == 3 and rest[2]:  # conj / neg bits: the bytes alone would read wrong
            raise CheckpointError("tensor with metadata (conjugate or negative bit) is not "
                                  "supported")
    if math.prod(shape):  # the last element read, exactly (Python ints do not wrap)
        last = offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= storage.numel:
            raise CheckpointError(f"tensor of shape {shape}, strides {strides} at offset "
                                  f"{offset} reads element {last:,} of {storage!r}, which has "
                                  f"{storage.numel:,}")
    return TensorRef(storage, offset, shape, strides)


def _no_hooks(hooks) -> None:
    if not (isinstance(hooks, StateDict) and not hooks):
        raise CheckpointError("tensor with backward hooks (a weights file has none)")


def _rebuild_parameter(data, requires_grad, hooks, state=None) -> TensorRef:
    """torch._utils._rebuild_parameter(_with_state): the tensor itself."""
    if not isinstance(data, TensorRef) or not isinstance(requires_grad, bool):
        raise CheckpointError("parameter built from something other than a tensor")
    _no_hooks(hooks)
    if state:
        raise CheckpointError("parameter with Python attributes (a Parameter subclass)")
    return data


def _size(*args) -> tuple[int, ...]:
    """torch.Size(sizes)."""
    if len(args) != 1:
        raise CheckpointError("torch.Size called with other than one argument")
    return _ints(args[0], "size")


GLOBALS = {
    ("collections", "OrderedDict"): Call("collections.OrderedDict", ordered_dict),
    ("torch._utils", "_rebuild_tensor"): Call("torch._utils._rebuild_tensor", _rebuild_tensor),
    ("torch._utils", "_rebuild_tensor_v2"): Call("torch._utils._rebuild_tensor_v2",
                                                 _rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): Call("torch._utils._rebuild_parameter",
                                                 _rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): Call(
        "torch._utils._rebuild_parameter_with_state", _rebuild_parameter),
    ("torch", "Size"): Call("torch.Size", _size),
    **{("torch", name): StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
    ("torch", "UntypedStorage"): StorageType("UntypedStorage", "u1"),
    ("torch.storage", "UntypedStorage"): StorageType("UntypedStorage", "u1"),
}


class Storages:
    """persistent_load: checks each storage id and remembers what each key was declared as."""

    def __init__(self, legacy: bool, known_keys=None, max_bytes: int = MAX_BYTES):
        self.legacy, self.known, self.max_bytes = legacy, known_keys, max_bytes
        self.declared: dict[str, tuple[StorageType, int]] = {}

    def __call__(self, pid) -> Storage:
        if not isinstance(pid, tuple) or not pid:
            raise UnsafePickleError(f"persistent id {printable(pid)} is not a tuple")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module":
            raise UnsafePickleError("the file holds a pickled nn.Module class (torch.save("
                                    "model)); save model.state_dict() instead")
        if kind != "storage" or len(pid) != (6 if self.legacy else 5):
            raise UnsafePickleError(f"persistent id of kind {printable(kind)} with "
                                    f"{len(pid)} fields; a storage id is expected")
        stype, key, location, numel = pid[1:5]
        if not isinstance(stype, StorageType):
            raise CheckpointError(f"storage type {printable(stype)}")
        if not isinstance(key, str) or not 0 < len(key) <= 64 or not key.isalnum() \
                or not key.isascii():
            raise CheckpointError(f"storage key {printable(key)!r} is not a short "
                                  f"alphanumeric name")
        if not isinstance(location, (str, bytes)):
            raise CheckpointError(f"storage {key}: location {printable(location)}")
        if type(numel) is not int or not 0 <= numel <= self.max_bytes // stype.dtype.itemsize:
            raise CheckpointError(f"storage {key} declares {printable(numel)} elements of "
                                  f"{stype!r} (limit {self.max_bytes:,} bytes)")
        if self.known is not None and key not in self.known:
            raise CheckpointError(f"storage {key} has no data in the file")
        if self.declared.setdefault(key, (stype, numel)) != (stype, numel):
            raise CheckpointError(f"storage {key} declared twice, as {stype!r} of {numel:,} "
                                  f"and as {self.declared[key][0]!r} of "
                                  f"{self.declared[key][1]:,}")
        if not self.legacy or pid[5] is None:
            return Storage(key, stype, 0, numel)
        view = pid[5]
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                and all(type(v) is int and v >= 0 for v in view[1:])
                and view[1] + view[2] <= numel):
            raise CheckpointError(f"storage {key}: view {printable(view)} outside its "
                                  f"{numel:,} elements")
        return Storage(key, stype, view[1], view[2])
