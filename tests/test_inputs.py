"""Input readers: every layout the CLI accepts, and hostile files (each built by hand).

Each hostile case asserts the reason in the one-line message, and the bomb cases that reading
stays fast and small (tracemalloc traces NumPy's allocations too).
"""

import contextlib
import functools
import gzip
import io
import os
import struct
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from engine.inputs import (
    MAX_INPUT_BYTES,
    InputError,
    as_nchw,
    describe_kind,
    read_array,
    read_idx,
    sniff,
)
from engine.ir import Preprocess

MiB = 2**20


def idx_bytes(a: np.ndarray, type_byte=0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_byte, a.ndim) + \
        struct.pack(f">{a.ndim}I", *a.shape) + a.astype(">u1").tobytes()


def npy_header(shape, descr="<f4", fortran=False) -> bytes:
    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, {"descr": descr, "fortran_order": fortran,
                                             "shape": shape})
    return h.getvalue()


def raw_npy_header(text: str) -> bytes:
    """A version 1.0 header with any text, padded as NumPy pads it: what np.save never writes."""
    body = text.encode("latin1")
    body += b" " * (-(len(body) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


@functools.cache
def gzip_of_zeros(head: bytes, n: int) -> bytes:
    """gzip(head + n zero bytes), compressed in 1 MiB pieces: a bomb never held inflated."""
    c = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    zero = bytes(MiB)
    return b"".join([c.compress(head)] + [c.compress(zero) for _ in range(n // MiB)]
                    + [c.flush()])


@contextlib.contextmanager
def bounded(peak=8 * MiB, seconds=1.0):
    """The block allocates at most `peak` bytes (traced) and takes under `seconds`."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - t0
        used = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert used < peak, f"peak {used / MiB:.1f} MiB traced"
    assert took < seconds, f"{took:.2f} s"


def refused(read, path, match, **kw):
    """read(path) raises one InputError line naming the file and matching the reason."""
    with pytest.raises(InputError, match=match) as e:
        read(path, **kw)
    assert "\n" not in str(e.value) and os.path.basename(path) in str(e.value)
    return str(e.value)


# ---- good files ----------------------------------------------------------------------------

def test_idx_plain_and_gzip_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), a)


@pytest.mark.parametrize("type_byte, dtype", [(0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                                              (0x0D, ">f4"), (0x0E, ">f8")])
def test_idx_big_endian_types_come_back_native(tmp_path, type_byte, dtype):
    a = np.arange(-60, 60).reshape(2, 3, 20).astype(dtype)
    head = struct.pack(">BBBB3I", 0, 0, type_byte, 3, *a.shape)
    (tmp_path / "a.idx").write_bytes(head + a.tobytes())
    got = read_idx(tmp_path / "a.idx")
    assert got.dtype.isnative and got.dtype == a.dtype.newbyteorder("=")
    assert np.array_equal(got, a)
    got[0, 0, 0] = 1  # the caller owns a writable array


def test_npy_and_npz(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", images=x, labels=np.array([3, 4]))
    np.savez_compressed(tmp_path / "z.npz", x=x, y=np.array([3, 4]))
    np.savez(tmp_path / "only.npz", whatever=x)
    assert np.array_equal(read_array(tmp_path / "x.npy")[0], x)
    for name in ("xy.npz", "z.npz"):
        got, y = read_array(tmp_path / name)
        assert np.array_equal(got, x) and list(y) == [3, 4]
    assert read_array(tmp_path / "only.npz")[1] is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(InputError, match="expected arrays"):
        read_array(tmp_path / "two.npz")


def test_npy_fortran_order_and_big_endian(tmp_path):
    a = np.arange(3 * 4 * 5, dtype=">i4").reshape(3, 4, 5)
    np.save(tmp_path / "f.npy", np.asfortranarray(a))
    got, _ = read_array(tmp_path / "f.npy")
    assert got.dtype == np.int32 and got.dtype.isnative and np.array_equal(got, a)


def test_legit_gzip_idx_is_read_without_a_second_copy(tmp_path):
    n = 16 * MiB
    (tmp_path / "z.idx.gz").write_bytes(gzip_of_zeros(struct.pack(">BBBB3I", 0, 0, 8, 3,
                                                                  16, 1024, 1024), n))
    # One buffer (+1/8 growth slack) and a chunk or two in flight; a second copy would be 2n.
    with bounded(peak=n * 5 // 4 + 4 * MiB):
        x = read_idx(tmp_path / "z.idx.gz")
    assert x.shape == (16, 1024, 1024) and x.dtype == np.uint8 and not x.any()


# ---- hostile .npy headers ------------------------------------------------------------------

@pytest.mark.parametrize("shape_text, match", [
    ("(1" + "0" * 400 + ",)", "header claims about 10\\*\\*400 bytes of data, over the limit"),
    ("(10**400,)", "bad .npy header"),                   # not a literal
    ("(1" + "0" * 400 + ", 0)", "cannot read"),          # zero bytes, but no such shape
    ("(-5,)", "negative dimension"),
    ("(" + "1, " * 3000 + "2)", "3001 dimensions"),
    ("(" + "-" * 3000 + "1,)", "bad .npy header"),       # RecursionError in the parser
    ("(" * 300 + ")" * 300, "bad .npy header"),          # tokenize.TokenError
    ("(1e400,)", "bad .npy header"),
    ("(28, 28, False)", r"shape \(28, 28, False\) is not whole numbers"),  # found by atheris
    ("(True,)", "is not whole numbers"),
], ids=["10**400 digits", "10**400 expression", "10**400 by 0", "negative", "3001 dims",
        "3000 minus signs", "300 parentheses", "1e400", "bool dim", "bool shape"])
def test_npy_headers_numpy_chokes_on(tmp_path, shape_text, match):
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_text}, }}"
    (tmp_path / "h.npy").write_bytes(raw_npy_header(text) + b"x" * 64)
    with bounded():
        refused(read_array, tmp_path / "h.npy", match)


def test_npy_huge_shape_in_a_tiny_file(tmp_path):
    (tmp_path / "a.npy").write_bytes(npy_header((2**26,), descr="|u1") + b"x" * 64)
    with bounded():
        msg = refused(read_array, tmp_path / "a.npy", "but the file holds 64 bytes")
    assert "67,108,864 bytes" in msg


@pytest.mark.parametrize("shape", [(10**6, 10**6), (2**40,), (28, 28)])
def test_npy_headers_claiming_more_than_the_file_holds(tmp_path, shape):
    (tmp_path / "a.npy").write_bytes(npy_header(shape) + b"x" * 64)
    with pytest.raises(InputError, match="header claims"):
        read_array(tmp_path / "a.npy")
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as z:
        z.writestr("x.npy", npy_header(shape) + b"x" * 64)
    with pytest.raises(InputError, match="header claims"):
        read_array(tmp_path / "a.npz")


@pytest.mark.parametrize("descr", ["|O", "<c8", "|S4", "<U2", "<M8[s]", "|V4",
                                   [("a", "<f4")], ("<f4", (1000, 1000))])
def test_npy_non_numeric_dtypes_are_refused(tmp_path, descr):
    (tmp_path / "o.npy").write_bytes(npy_header((2,), descr=descr) + b"x" * 16)
    refused(read_array, tmp_path / "o.npy", "objects" if descr == "|O" else "not plain numbers")


def test_garbage_missing_and_directories(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not really a zip")
    refused(read_array, tmp_path / "g.npz", "not a zip file")
    refused(read_array, tmp_path / "missing.npy", "no such file")
    refused(read_idx, tmp_path / "missing.idx", "no such file")
    for name in ("d.npy", "d.npz", "d.idx"):
        (tmp_path / name).mkdir()
        refused(read_array, tmp_path / name, "Is a directory")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_file(tmp_path):
    (tmp_path / "p.npy").write_bytes(b"x")
    (tmp_path / "p.npy").chmod(0)
    refused(read_array, tmp_path / "p.npy", "Permission denied")


# ---- hostile IDX ---------------------------------------------------------------------------

@pytest.mark.parametrize("data, needle", [
    (b"", "bad magic"),
    (b"\x00\x00\x08", "bad magic"),
    (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
    (b"\x00\x00\x08\x09", "dimensions"),
    (struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"abc", "truncated IDX data"),
    (struct.pack(">BBBB3I", 0, 0, 8, 3, 60000, 60000, 60000), "limit"),
])
def test_bad_idx_files(tmp_path, data, needle):
    (tmp_path / "bad").write_bytes(data)
    with pytest.raises(InputError, match=needle):
        read_idx(tmp_path / "bad")


def test_idx_gz_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "x.idx.gz").write_bytes(gzip_of_zeros(struct.pack(">BBBBI", 0, 0, 8, 1, 2**31),
                                                      64 * MiB))
    with bounded():
        msg = refused(read_idx, tmp_path / "x.idx.gz", "over the limit")
    assert msg.endswith("x.idx.gz: IDX header claims 2,147,483,648 bytes of data, over the "
                        "limit of 268,435,456 bytes (max_bytes)")


def test_idx_gz_under_a_lowered_limit(tmp_path):
    head = struct.pack(">BBBB3I", 0, 0, 8, 3, 200, 1024, 1024)
    assert 200 * MiB < MAX_INPUT_BYTES  # fine by default, not under max_bytes=1 MiB
    (tmp_path / "x.idx.gz").write_bytes(gzip_of_zeros(head, 64 * MiB))
    with bounded():
        refused(read_idx, tmp_path / "x.idx.gz", "over the limit of 1,048,576 bytes",
                max_bytes=MiB)
        refused(read_array, tmp_path / "x.idx.gz", "over the limit of 1,048,576 bytes",
                max_bytes=MiB)


def test_idx_gz_claiming_more_than_it_inflates_to(tmp_path):
    head = struct.pack(">BBBB3I", 0, 0, 8, 3, 200, 1024, 1024)
    (tmp_path / "x.idx.gz").write_bytes(gzip_of_zeros(head, 4 * MiB))
    with bounded(peak=8 * MiB):  # memory follows the 4 MiB there, not the 200 MiB claimed
        refused(read_idx, tmp_path / "x.idx.gz", "truncated IDX data \\(4,194,304 of")


@pytest.mark.parametrize("dims, figure", [
    ((2**16,) * 4, "18,446,744,073,709,551,616"),  # 2**64: wraps to 0 in int64
    ((2**32 - 1,) * 4, "about 10\\*\\*38"),      # wraps to a negative number
], ids=["2**64", "(2**32-1)**4"])
def test_idx_dims_whose_product_wraps_int64(tmp_path, dims, figure):
    (tmp_path / "w.idx").write_bytes(struct.pack(">BBBB4I", 0, 0, 8, 4, *dims) + b"x" * 64)
    with bounded():
        refused(read_idx, tmp_path / "w.idx", f"claims {figure} bytes of data, over the limit")


@pytest.mark.parametrize("damage, match", [
    (lambda gz: gz[:-12], "ended before the end-of-stream marker"),  # truncated stream
    (lambda gz: gz[:2] + b"\x09" + gz[3:], "Unknown compression method"),  # BadGzipFile
    (lambda gz: gz[:10] + b"\xff" * 20 + gz[30:], "invalid"),         # zlib.error
], ids=["truncated", "bad method", "bad deflate data"])
def test_damaged_gzip(tmp_path, damage, match):
    a = np.random.default_rng(0).integers(0, 256, (50, 28, 28)).astype(np.uint8)
    (tmp_path / "t.idx.gz").write_bytes(damage(gzip.compress(idx_bytes(a))))
    refused(read_idx, tmp_path / "t.idx.gz", match)


# ---- hostile .npz --------------------------------------------------------------------------

def patch_central_directory(data: bytes, offset: int, fmt: str, value) -> bytes:
    """Overwrite one field of the (first) central directory entry of a zip file."""
    at = data.index(b"PK\x01\x02") + offset
    return data[:at] + struct.pack(fmt, value) + data[at + struct.calcsize(fmt):]


def test_npz_member_claiming_a_huge_size(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("x.npy", npy_header((200, 1024, 1024), descr="|u1") + b"x" * 64)
    # file_size (offset 24) now says ~4 GiB, compress_size still the truth.
    (tmp_path / "a.npz").write_bytes(patch_central_directory(buf.getvalue(), 24, "<I",
                                                             2**32 - 16))
    with bounded():
        refused(read_array, tmp_path / "a.npz", "truncated array data \\(64 of")


def test_npz_deflate_bombs(tmp_path):
    def deflated(path, members):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, n in members:  # a header claiming n bytes, then n zeros, streamed
                with z.open(f"{name}.npy", "w", force_zip64=True) as m:
                    m.write(npy_header((n,), descr="|u1"))
                    for _ in range(min(n, 64 * MiB) // MiB):
                        m.write(bytes(MiB))
                    m.write(bytes(n % MiB))

    deflated(tmp_path / "b.npz", [("x", 2**31)])  # 64 MiB of the 2 GiB claimed are there
    with bounded():
        refused(read_array, tmp_path / "b.npz", "x: header claims 2,147,483,648 bytes of data, "
                "over the limit of 268,435,456 bytes")
    deflated(tmp_path / "d.npz", [("images", 16 * MiB), ("labels", 64)])
    with bounded():
        refused(read_array, tmp_path / "d.npz", "images: header claims 16,777,216 bytes of "
                "data, over the limit of 1,048,576", max_bytes=MiB)
    with bounded(peak=16 * MiB * 5 // 4 + 4 * MiB):  # images and labels share one budget
        refused(read_array, tmp_path / "d.npz", "labels: header claims 64 bytes of data, over "
                "the limit of 63 bytes", max_bytes=16 * MiB + 63)


def test_npz_member_that_inflates_past_its_header(tmp_path):
    with zipfile.ZipFile(tmp_path / "b.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as m:
            m.write(npy_header((64,), descr="|u1"))
            for _ in range(64):
                m.write(bytes(MiB))
    with bounded():  # only the 64 bytes the header declares are inflated
        x, _ = read_array(tmp_path / "b.npz")
    assert x.shape == (64,) and not x.any()


def central_directory(n: int, claimed: int) -> bytes:
    """A zip that is only a central directory of n one-letter entries and an end record whose
    counts say `claimed`: ZipFile parses every entry before anyone could count them."""
    entry = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0,
                        0, 0, 0) + b"a"
    cd = entry * n
    return cd + struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, claimed, claimed, len(cd), 0, 0)


@pytest.mark.parametrize("n, claimed, match", [
    (2000, 2000, "for 2,000 members, over the limit of 1024 members"),
    (2000, 1, "2,000 zip members, over the limit of 1024"),           # end record lies
    (100_000, 1, "directory of 4,700,000 bytes .* limit .* \\(1,048,576 bytes\\)"),
], ids=["counted", "end record lies", "huge directory"])
def test_npz_with_too_many_members(tmp_path, n, claimed, match):
    (tmp_path / "m.npz").write_bytes(central_directory(n, claimed))
    with bounded(seconds=0.5):
        refused(read_array, tmp_path / "m.npz", match)


@pytest.mark.parametrize("field, value, match", [
    (10, 99, "compression method"),    # NotImplementedError
    (8, 1, "password required"),       # RuntimeError: encrypted
    (8, 0x800, "cannot read"),         # UTF-8 flag on a name that is not: UnicodeDecodeError
], ids=["compression 99", "encrypted", "bad UTF-8 name"])
def test_npz_zip_features_we_cannot_read(tmp_path, field, value, match):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("Z.npy", npy_header((2,)) + bytes(8))
    data = patch_central_directory(buf.getvalue().replace(b"Z.npy", b"\xff.npy"), field, "<H",
                                   value)
    (tmp_path / "f.npz").write_bytes(data)
    refused(read_array, tmp_path / "f.npz", match)


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_npz_members_that_cannot_be_inflated_in_bounded_pieces(tmp_path, method):
    with zipfile.ZipFile(tmp_path / "c.npz", "w", method) as z:
        z.writestr("x.npy", npy_header((64,), descr="|u1") + bytes(4 * MiB))
    with bounded():
        refused(read_array, tmp_path / "c.npz", f"x: zip compression method {method}; only "
                "stored and deflated")


# ---- as_nchw -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, n", [((28, 28), 1), ((1, 28, 28), 1), ((5, 28, 28), 5),
                                      ((5, 1, 28, 28), 5)])
def test_as_nchw_layouts(shape, n):
    assert as_nchw(np.zeros(shape), (1, 28, 28), "s").shape == (n, 1, 28, 28)


@pytest.mark.parametrize("shape", [(28,), (27, 28), (5, 3, 28, 28), (2, 2, 2, 28, 28)])
def test_as_nchw_rejects(shape):
    with pytest.raises(InputError, match="do not fit"):
        as_nchw(np.zeros(shape), (1, 28, 28), "s")


@pytest.mark.parametrize("dtype", [object, "<U1", "S1", np.complex64, "M8[s]", "m8[s]", "V4",
                                   [("a", "<f4")]])
def test_as_nchw_refuses_non_numeric_dtypes(dtype):
    with pytest.raises(InputError, match="s: images of dtype .* are not plain numbers"):
        as_nchw(np.zeros((2, 28, 28), dtype=dtype), (1, 28, 28), "s")


@pytest.mark.parametrize("shape, n", [((28, 28, 1), 1), ((5, 28, 28, 1), 5)])
def test_as_nchw_channels_last(shape, n):
    x = np.arange(np.prod(shape)).reshape(shape)
    got = as_nchw(x, (1, 28, 28), "s")
    assert got.shape == (n, 1, 28, 28)
    np.testing.assert_array_equal(got[:, 0], x.reshape(n, 28, 28))
    rgb = np.arange(2 * 8 * 6 * 3).reshape(2, 8, 6, 3)  # NHWC -> NCHW
    np.testing.assert_array_equal(as_nchw(rgb, (3, 8, 6), "s"), rgb.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(as_nchw(rgb[0], (3, 8, 6), "s"), rgb[:1].transpose(0, 3, 1, 2))


# ---- what a file is --------------------------------------------------------------------------

@pytest.mark.parametrize("name, head, kind", [
    ("m.pnn", b"\x89PNN\r\n\x1a\n" + bytes(32), "pnn"),
    ("renamed.jpg", b"\x89PNN\r\n\x1a\n" + bytes(32), "pnn"),   # the bytes decide
    ("a.npy", b"\x93NUMPY\x01\x00", "npy"),
    ("a.npz", b"PK\x03\x04" + bytes(20), "npz"),
    ("model.pt", b"PK\x03\x04" + bytes(20), "torch"),
    ("t.gz", b"\x1f\x8b\x08" + bytes(10), "gzip"),
    ("t-images-idx3-ubyte", b"\x00\x00\x08\x03" + bytes(12), "idx"),
    ("p.jpg", b"\xff\xd8\xff\xe0" + bytes(12), "JPEG"),
    ("p.png", b"\x89PNG\r\n\x1a\n" + bytes(8), "PNG"),
    ("p.gif", b"GIF89a" + bytes(8), "GIF"),
    ("p.bmp", b"BM" + bytes(12), "BMP"),
    ("p.webp", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "WEBP"),
    ("p.pgm", b"P5\n28 28\n255\n", "PPM"),
    ("m.tflite", b"\x1c\x00\x00\x00TFL3" + bytes(8), "tflite"),
    ("m.onnx", b"\x08\x07\x12\x07pytorch", "onnx"),
    ("notes.txt", b"hello", None),
    ("empty", b"", None),
])
def test_sniff(tmp_path, name, head, kind):
    (tmp_path / name).write_bytes(head)
    assert sniff(tmp_path / name) == kind
    assert describe_kind(kind)


def test_sniff_of_a_missing_file_is_none(tmp_path):
    assert sniff(tmp_path / "nope.png") is None


# ---- the raw range (Preprocess.apply) --------------------------------------------------------

PIXELS = Preprocess(scale=1 / 255, mean=[0.5], std=[0.25])


def test_raw_range_follows_the_scale():
    assert PIXELS.raw_range == (0.0, 255.0)
    assert Preprocess(scale=1 / 65535).raw_range == (0.0, 65535.0)
    assert Preprocess(scale=1.0).raw_range is None and Preprocess(scale=2.0).raw_range is None


def test_integers_are_raw_pixels_and_floats_in_range_pass():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    want = (u8 / 255 - 0.5) / 0.25
    for x in (u8, u8.astype(np.int64), u8.astype(np.float32), u8.astype(np.float64)):
        np.testing.assert_allclose(PIXELS.apply(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("x, match", [
    (np.full((1, 1, 2, 2), 0.5, np.float32), r"values in 0\.5\.\.0\.5 look like 0\.\.1 pixels"),
    (np.ones((1, 1, 2, 2), bool), r"values in 1\.\.1 look like 0\.\.1 pixels"),
    (np.full((1, 1, 2, 2), 300.0), r"values in 300\.\.300; the model takes raw pixels in "
                                   r"0\.\.255"),
    (np.full((1, 1, 2, 2), -0.5), r"values in -0\.5\.\.-0\.5; the model takes raw pixels"),
    (np.full((1, 1, 2, 2), 256, np.uint16), r"integer values in 256\.\.256; the model takes"),
    (np.full((1, 1, 2, 2), -1, np.int8), r"integer values in -1\.\.-1"),
    (np.array([[[[0.0, np.nan]]]]), "the values hold NaN or infinity"),
    (np.array([[[[7.0, np.inf]]]]), "the values hold NaN or infinity"),
])
def test_refused_raw_values_name_the_source_and_the_range(x, match):
    with pytest.raises(InputError, match=f"^photo: {match}") as e:
        PIXELS.apply(x, source="photo")
    assert "\n" not in str(e.value)


def test_input_range_maps_onto_the_raw_range():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    want = PIXELS.apply(u8)
    unit = u8.astype(np.float32) / 255
    np.testing.assert_allclose(PIXELS.apply(unit, input_range=(0, 1)), want, atol=1e-5)
    np.testing.assert_allclose(PIXELS.apply(unit * 2 - 1, input_range=(-1, 1)), want, atol=1e-5)
    np.testing.assert_array_equal(PIXELS.apply(u8, input_range=(0, 255)), want)
    with pytest.raises(InputError, match=r"s: values in 0\.\.255, outside the input range 0\.\.1"):
        PIXELS.apply(u8, input_range=(0, 1), source="s")
    with pytest.raises(ValueError, match="input_range must be two finite numbers"):
        PIXELS.apply(unit, input_range=(1, 0))
    with pytest.raises(InputError, match="the model declares no raw range"):
        Preprocess(scale=1.0).apply(unit, input_range=(0, 1))


def test_without_a_raw_range_values_go_in_as_they_are():
    x = np.linspace(-3, 3, 16).reshape(1, 1, 4, 4)
    np.testing.assert_allclose(Preprocess(scale=1.0).apply(x), x, rtol=1e-6)
    with pytest.raises(InputError, match="NaN"):
        Preprocess(scale=1.0).apply(np.full((1, 1, 1, 1), np.nan))
