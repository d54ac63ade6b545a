"""PyTorch checkpoints (`torch.save`) as `dict[str, np.ndarray]`, without torch.

    tensors = read_torch_checkpoint("resnet18.pth")     # {"conv1.weight": array, ...}

Both formats torch writes are read:

- zip (torch >= 1.6): `<name>/data.pkl` (the pickled object; each storage a persistent id
  ('storage', type, key, location, numel)), `<name>/data/<key>` (a storage's raw bytes),
  `<name>/byteorder` ("little" / "big"; absent means little), `<name>/version`.
- legacy (torch < 1.6; torchvision's older weight files, e.g. mobilenet_v2-b0353104.pth,
  are in it): five pickles in a row (magic number, protocol 1001, system info with the byte
  order, the object with persistent ids ('storage', type, key, location, numel, view), the
  list of storage keys), then per key an int64 element count and the raw bytes.
  (Torch's pre-0.4 tar format is refused.)

The object may be a state dict, or wrap one under "state_dict", "model_state_dict" or
"model"; keys prefixed "module." throughout (DataParallel) lose it. Values that are not
tensors are dropped.

The file is treated as written by an attacker (docs/SECURITY.md). Pickles go through
`safe_pickle`: only the globals in `GLOBALS` (torch_pickle.py) exist, each mapped to a
function of ours that returns a description, never a torch object. Every persistent id is
checked (kind, storage type, key, numel; the same key always with the same type and size);
every tensor's offset, sizes and strides against its storage's declared elements (exact
integers); each storage's declared size against the bytes of its zip entry (or of the legacy
file), all before anything is read. Only then are the bytes read, once per storage, and each
tensor copied out of them through `as_strided` (any strides, broadcast and overlapping ones
included, are safe once every index is proven in bounds). At most `max_bytes` of storage are
read and at most `max_bytes` of arrays made. Every failure is one CheckpointError naming the
file.
"""

from __future__ import annotations

import math
import os

import numpy as np

from compress.importers import _zip
from compress.importers.errors import CheckpointError, printable
from compress.importers.safe_pickle import MAX_PICKLE_BYTES, load
from compress.importers.torch_pickle import GLOBALS, MAX_BYTES, Storages, TensorRef

WRAPPERS = ("state_dict", "model_state_dict", "model")
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch/serialization.py MAGIC_NUMBER
LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_HEAD = b"\x80\x02\x8a\x0a"  # PROTO 2, LONG1 of 10 bytes: the magic number's pickle


def read_torch_checkpoint(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES
                          ) -> dict[str, np.ndarray]:
    """The state dict in a torch.save file: name -> array of the stored dtype (bfloat16 as
    float32). CheckpointError (one line naming the file) for anything else."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(512)
            f.seek(0)
            if head.startswith(_ZIP_MAGIC):
                obj, declared, read = _open_zip(f, source, max_bytes)
            elif head.startswith(_LEGACY_HEAD):
                obj, declared, read = _open_legacy(f, size, source, max_bytes)
            elif head[257:262] == b"ustar":
                raise CheckpointError(f"{source}: a tar-format checkpoint (PyTorch < 0.4); "
                                      f"load and re-save it with a newer PyTorch")
            else:
                raise CheckpointError(f"{source}: not a PyTorch checkpoint (neither a zip "
                                      f"archive nor a legacy torch.save file)")
            tensors = _state_dict(obj, source)
            return _materialize(tensors, declared, read, source, max_bytes)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{source}: no such file") from None
    except MemoryError:
        raise
    except _zip.READ_ERRORS as e:
        raise CheckpointError(f"{source}: cannot read it ({type(e).__name__}: "
                              f"{printable(str(e), 120)})") from None


def _open_zip(f, source: str, max_bytes: int):
    z = _zip.open_zip(f, source)
    infos = {i.filename: i for i in z.infolist()}
    pickles = [n for n in infos if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise CheckpointError(f"{source}: a zip archive, but not a torch.save checkpoint "
                              f"({len(pickles)} '<name>/data.pkl' entries; TorchScript and "
                              f"other archives are not read)")
    prefix = pickles[0][:-len("data.pkl")]

    def small(name: str) -> bytes | None:
        info = infos.get(prefix + name)
        return None if info is None else _zip.read_entry(z, info, 64, source).strip()

    order = small("byteorder") or b"little"
    if order not in (b"little", b"big"):
        raise CheckpointError(f"{source}: byteorder {printable(order)}")
    version = small("version")
    if version is not None and not (version.isdigit() and 1 <= int(version) <= 20):
        raise CheckpointError(f"{source}: archive version {printable(version)}")
    data = _zip.read_entry(z, infos[pickles[0]], MAX_PICKLE_BYTES, source)
    keys = {n[len(prefix) + 5:] for n in infos if n.startswith(prefix + "data/")}
    storages = Storages(False, keys, max_bytes)
    obj, _ = load(data, 0, source=f"{source}:{pickles[0]}", globals_=GLOBALS,
                  persistent_load=storages)

    def read(key: str) -> np.ndarray:
        stype, numel = storages.declared[key]
        info = infos[f"{prefix}data/{key}"]
        if info.file_size != numel * stype.dtype.itemsize:
            raise CheckpointError(f"{source}:{info.filename}: holds {info.file_size:,} bytes, "
                                  f"the pickle declares {numel:,} elements of "
                                  f"{stype.dtype.itemsize} bytes")
        raw = _zip.read_entry(z, info, max_bytes, source)
        return np.frombuffer(raw, stype.dtype.newbyteorder("<" if order == b"little" else ">"))
    return obj, storages.declared, read


def _open_legacy(f, size: int, source: str, max_bytes: int):
    head = f.read(min(size, 2 * MAX_PICKLE_BYTES + (1 << 16)))  # all five pickles
    magic, pos = load(head, 0, source=f"{source} (magic number)", globals_={})
    if magic != LEGACY_MAGIC:
        raise CheckpointError(f"{source}: not a PyTorch checkpoint (bad magic number)")
    protocol, pos = load(head, pos, source=f"{source} (protocol)", globals_={})
    if protocol != LEGACY_PROTOCOL:
        raise CheckpointError(f"{source}: legacy protocol {printable(protocol)}, expected "
                              f"{LEGACY_PROTOCOL}")
    info, pos = load(head, pos, source=f"{source} (system info)", globals_={})
    if not isinstance(info, dict) or not isinstance(info.get("little_endian"), bool):
        raise CheckpointError(f"{source}: malformed system info record")
    endian = "<" if info["little_endian"] else ">"
    storages = Storages(True, max_bytes=max_bytes)
    obj, pos = load(head, pos, source=f"{source} (object)", globals_=GLOBALS,
                    persistent_load=storages)
    keys, pos = load(head, pos, source=f"{source} (storage keys)", globals_={})
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) \
            or len(set(keys)) != len(keys) or set(keys) != set(storages.declared):
        raise CheckpointError(f"{source}: the storage key list does not match the storages "
                              f"the object uses")
    where: dict[str, int] = {}  # key -> file offset of its bytes, each count checked
    for key in keys:
        f.seek(pos)
        count = f.read(8)
        stype, numel = storages.declared[key]
        if len(count) < 8:
            raise CheckpointError(f"{source}: truncated before storage {key}'s data")
        stored = int.from_bytes(count, "little" if endian == "<" else "big", signed=True)
        if stored != numel:
            raise CheckpointError(f"{source}: storage {key} holds {stored:,} elements, the "
                                  f"pickle declares {numel:,}")
        where[key] = pos + 8
        pos += 8 + numel * stype.dtype.itemsize
        if pos > size:
            raise CheckpointError(f"{source}: truncated in storage {key} ({size:,} bytes, "
                                  f"{pos:,} needed)")

    def read(key: str) -> np.ndarray:
        stype, numel = storages.declared[key]
        f.seek(where[key])
        raw = f.read(numel * stype.dtype.itemsize)
        if len(raw) != numel * stype.dtype.itemsize:  # the file shrank since it was measured
            raise CheckpointError(f"{source}: truncated in storage {key}")
        return np.frombuffer(raw, stype.dtype.newbyteorder(endian))
    return obj, storages.declared, read


def _state_dict(obj, source: str) -> dict[str, TensorRef]:
    """The state dict inside the unpickled object (see the module docstring)."""
    for _ in range(3):  # wrappers inside wrappers: {"model": {"state_dict": ...}}
        if not isinstance(obj, dict):
            raise CheckpointError(f"{source}: holds {printable(obj)}, not a state dict")
        if any(isinstance(v, TensorRef) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            keys = ", ".join(repr(printable(k, 40)) for k in list(obj)[:8])
            raise CheckpointError(f"{source}: no tensors and no state dict under "
                                  f"{' / '.join(WRAPPERS)} (keys: {keys or 'none'})")
        obj = inner
    tensors = {k: v for k, v in obj.items() if isinstance(v, TensorRef)}
    if not tensors:
        raise CheckpointError(f"{source}: no tensors found")
    bad = [k for k in tensors if not isinstance(k, str)]
    if bad:
        raise CheckpointError(f"{source}: tensor names must be strings, got {printable(bad[0])}")
    if all(k.startswith("module.") for k in tensors):  # saved from nn.DataParallel
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def _materialize(tensors: dict[str, TensorRef], declared: dict, read, source: str,
                 max_bytes: int) -> dict[str, np.ndarray]:
    """Read each storage the tensors use once, and copy its tensors out of it."""
    by_key: dict[str, list[str]] = {}
    for name, t in tensors.items():
        by_key.setdefault(t.storage.key, []).append(name)
    stored = sum(declared[k][1] * declared[k][0].dtype.itemsize for k in by_key)
    made = sum(math.prod(t.shape) * (4 if t.storage.stype.name == "BFloat16Storage"
                                      else t.storage.stype.dtype.itemsize)
               for t in tensors.values())
    if max(stored, made) > max_bytes:
        raise CheckpointError(f"{source}: its tensors need {max(stored, made):,} bytes, over "
                              f"the limit of {max_bytes:,} (max_bytes)")
    out: dict[str, np.ndarray] = {}
    for key, names in by_key.items():
        whole = read(key)
        for name in names:
            out[name] = _copy(whole, tensors[name])
        del whole
    return {name: out[name] for name in tensors}  # the file's order


def _copy(whole: np.ndarray, t: TensorRef) -> np.ndarray:
    """A contiguous native-order copy of tensor `t` out of its storage's elements."""
    start = t.storage.start + t.offset
    if math.prod(t.shape) == 0:
        a = np.empty(t.shape, whole.dtype)
    else:  # _rebuild_tensor proved start + sum((n - 1) * stride) < the storage's elements
        a = np.lib.stride_tricks.as_strided(
            whole[start:], shape=t.shape,
            strides=tuple(s * whole.itemsize for s in t.stride), writeable=False)
    a = np.array(a, dtype=whole.dtype.newbyteorder("="), order="C")  # keeps 0-d as 0-d
    stype = t.storage.stype.name
    if stype == "BFloat16Storage":  # the high half of a float32
        return (a.astype(np.uint32) << 16).view(np.float32)
    if stype == "BoolStorage":
        return a != 0
    return a
