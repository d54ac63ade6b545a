"""Input readers: every layout the CLI accepts, and files that lie about their size."""

import gzip
import io
import struct
import zipfile

import numpy as np
import pytest

from engine.inputs import InputError, as_nchw, read_array, read_idx


def idx_bytes(a: np.ndarray, type_byte=0x08) -> bytes:
    return struct.pack(">BBBB", 0, 0, type_byte, a.ndim) + \
        struct.pack(f">{a.ndim}I", *a.shape) + a.astype(">u1").tobytes()


def npy_header(shape, descr="<f4") -> bytes:
    h = io.BytesIO()
    np.lib.format.write_array_header_1_0(h, {"descr": descr, "fortran_order": False,
                                             "shape": shape})
    return h.getvalue()


def test_idx_plain_and_gzip_round_trip(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (7, 28, 28)).astype(np.uint8)
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), a)
    assert np.array_equal(read_idx(tmp_path / "a.idx.gz"), a)


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


def test_npy_and_npz(tmp_path):
    x = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", images=x, labels=np.array([3, 4]))
    np.savez(tmp_path / "only.npz", whatever=x)
    assert np.array_equal(read_array(tmp_path / "x.npy")[0], x)
    got, y = read_array(tmp_path / "xy.npz")
    assert np.array_equal(got, x) and list(y) == [3, 4]
    assert read_array(tmp_path / "only.npz")[1] is None
    np.savez(tmp_path / "two.npz", a=x, b=x)
    with pytest.raises(InputError, match="expected arrays"):
        read_array(tmp_path / "two.npz")


@pytest.mark.parametrize("shape", [(10**6, 10**6), (2**40,), (28, 28)])
def test_npy_headers_claiming_more_than_the_file_holds(tmp_path, shape):
    (tmp_path / "a.npy").write_bytes(npy_header(shape) + b"x" * 64)
    with pytest.raises(InputError, match="header claims"):
        read_array(tmp_path / "a.npy")
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as z:
        z.writestr("x.npy", npy_header(shape) + b"x" * 64)
    with pytest.raises(InputError, match="header claims"):
        read_array(tmp_path / "a.npz")


def test_object_arrays_and_garbage_are_refused(tmp_path):
    (tmp_path / "o.npy").write_bytes(npy_header((2,), descr="|O") + b"x" * 16)
    with pytest.raises(InputError, match="objects"):
        read_array(tmp_path / "o.npy")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="g.npz"):
        read_array(tmp_path / "g.npz")
    with pytest.raises(InputError, match="no such file"):
        read_array(tmp_path / "missing.npy")


@pytest.mark.parametrize("shape, n", [((28, 28), 1), ((1, 28, 28), 1), ((5, 28, 28), 5),
                                      ((5, 1, 28, 28), 5)])
def test_as_nchw_layouts(shape, n):
    assert as_nchw(np.zeros(shape), (1, 28, 28), "s").shape == (n, 1, 28, 28)


@pytest.mark.parametrize("shape", [(28,), (27, 28), (5, 3, 28, 28), (2, 2, 2, 28, 28)])
def test_as_nchw_rejects(shape):
    with pytest.raises(InputError, match="do not fit"):
        as_nchw(np.zeros(shape), (1, 28, 28), "s")
