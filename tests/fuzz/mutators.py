"""Structure-aware mutators for the fuzzers (atheris' `custom_mutator`).

libFuzzer's byte mutations alone stop at the first checksum: every byte of a .pnn file outside
padding is under a CRC, gzip and zip members carry CRCs too, and .pnn metadata is zlib-deflated
JSON. Each mutator here mixes plain libFuzzer mutations (`mutate`, atheris.Mutate: these keep
exercising the checks in front of the CRCs) with mutations of one part of the file, after which
the container is rebuilt around it with correct checksums: a section's bytes, a field of a
tensor header, the metadata JSON (as a tree or as text), the section list, the header fields;
the .npy header, the IDX header, the inflated payload of a .gz, one member of a .npz.

The mutators only make inputs; the corpus files are exactly the bytes a target reads, so a
replay needs none of this. `mutate(data, max_size) -> bytes` is passed in, so this module
imports without atheris.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import struct
import warnings
import zipfile
import zlib

# Values that sit on or next to the limits the readers check (formats.constants, the IDX and
# .npy readers, engine.ops.attrs.MAX_INT, int64 / uint64 edges).
INTERESTING_INTS = (
    0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 24, 25, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023,
    1024, 1025, 65535, 65536, 65537, (1 << 20), (1 << 24), (1 << 24) + 1, (1 << 31) - 1,
    1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
)
JSON_VALUES = (
    0, 1, -1, 2, 3, 5, 28, 10**20, -(10**20), (1 << 24), (1 << 24) + 1, (1 << 31) - 1, 1 << 31,
    1 << 63, 1 << 64, 0.5, -0.0, 1e308, 1e-310, float("nan"), float("inf"), float("-inf"),
    "", "x", "input", "logits", True, False, None, [], {}, [0], [1], [0, 0], [1, 1], [2, 2],
    [1, 2, 3], [1, 28, 28], [1 << 24, 1], [0.5, 1], ["1", "1"],
)
# Keys the engine's graph schema knows (engine/ir.py, engine/ops/*): adding them where they
# do not belong, or with odd values, reaches the attribute and parameter checks.
JSON_KEYS = (
    "graph", "nodes", "op", "name", "inputs", "outputs", "attrs", "params", "input", "shape",
    "output", "ir_version", "labels", "preprocess", "scale", "mean", "std", "layout",
    "producer", "stride", "padding", "kernel", "dilation", "groups", "start_dim", "axis",
    "weight", "bias", "tensors", "section", "metadata",
)
OPS = ("conv2d", "linear", "relu", "maxpool2d", "flatten", "softmax", "gemm", "Conv")


def _interesting_int(rng: random.Random) -> int:
    v = rng.choice(INTERESTING_INTS)
    return v + rng.choice((-1, 0, 0, 0, 1)) if v else v


def _put_int(buf: bytearray, at: int, rng: random.Random) -> None:
    """Overwrite a little-endian field of 1, 2, 4 or 8 bytes at `at` with an edge value."""
    width = rng.choice((1, 2, 4, 8))
    width = min(width, len(buf) - at)
    if width <= 0:
        return
    value = _interesting_int(rng) % (1 << (8 * width))
    buf[at:at + width] = value.to_bytes(width, "little")


def _mut(mutate, data: bytes, max_size: int) -> bytes:
    """libFuzzer's mutation of `data`, allowed to grow a little past its size."""
    return mutate(data, max(len(data) + 64, min(max_size, 2 * len(data) + 16)))


def _fits(out: bytes | None, max_size: int) -> bool:
    return out is not None and len(out) <= max_size


# ---- JSON ------------------------------------------------------------------------------------


def _slots(doc) -> list[tuple[object, object]]:
    """Every (container, key) in a JSON tree (the root excluded)."""
    out, stack = [], [doc] if isinstance(doc, (dict, list)) else []
    while stack and len(out) < 5000:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            out.append((node, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    return out


def _strings(doc) -> list[str]:
    return [c[k] for c, k in _slots(doc) if isinstance(c[k], str)] or ["x"]


def mutate_json(doc, rng: random.Random):
    """One edit of a JSON tree, in place where possible; returns the (new) root."""
    slots = _slots(doc)
    if not slots:
        return rng.choice(JSON_VALUES)
    container, key = rng.choice(slots)
    value = container[key]
    op = rng.randrange(9)
    if op == 0:  # an edge value
        container[key] = rng.choice(JSON_VALUES)
    elif op == 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
        container[key] = rng.choice((value + 1, value - 1, -value, value * 2, value * 1000,
                                     float(value), 0))
    elif op == 1 and isinstance(value, str):
        container[key] = rng.choice(_strings(doc) + list(OPS) + list(JSON_KEYS))
    elif op == 2:  # delete it
        del container[key]
    elif op == 3 and isinstance(value, list):  # duplicate, drop or swap elements
        if value and rng.random() < 0.5:
            value.insert(rng.randrange(len(value) + 1), json.loads(json.dumps(rng.choice(value))))
        elif len(value) > 1:
            i, j = rng.randrange(len(value)), rng.randrange(len(value))
            value[i], value[j] = value[j], value[i]
        else:
            value.append(rng.choice(JSON_VALUES))
    elif op == 4 and isinstance(value, dict):  # a known key, possibly where it does not belong
        value[rng.choice(JSON_KEYS)] = rng.choice(JSON_VALUES + tuple(_strings(doc)))
    elif op == 5:  # another subtree copied here
        other_c, other_k = rng.choice(slots)
        container[key] = json.loads(json.dumps(other_c[other_k]))
    elif op == 6:  # wrap or unwrap
        if isinstance(value, list) and len(value) == 1:
            container[key] = value[0]
        else:
            container[key] = [value]
    elif op == 7 and isinstance(container, dict):  # rename the key
        container[rng.choice(JSON_KEYS + tuple(_strings(doc)))] = container.pop(key)
    else:  # a string from elsewhere in the document (value names, tensor names, ops)
        container[key] = rng.choice(_strings(doc) + list(OPS))
    return doc


def mutate_json_text(text: bytes, mutate, max_size: int, rng: random.Random) -> bytes:
    """The JSON as a tree (most of the time) or as text."""
    if rng.random() < 0.7:
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            doc = None
        if doc is not None:
            for _ in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
                doc = mutate_json(doc, rng)
            try:
                return json.dumps(doc, separators=(",", ":"), sort_keys=rng.random() < 0.8,
                                  ensure_ascii=rng.random() < 0.5).encode("utf-8")
            except (ValueError, RecursionError):
                pass
    return _mut(mutate, text, max_size)


# ---- .pnn --------------------------------------------------------------------------------------

SPECIAL_FLOATS = (float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e38, -3e38, 1e-45,
                  65504.0, 1.0)
# Where the tensor rewriter writes its scratch file: the harness sets its private temp dir
# (removed when fuzzing ends); otherwise a temp dir of this process, removed at exit.
scratch_dir: str | None = None


def _decode_section(body: bytes):
    """(name, value) of one tensor section, through the reader's public API (a scratch file
    holding just this section), or None when the reader refuses it."""
    import os
    import tempfile

    import formats
    from tests.fuzz import pnnlayout

    if len(body) < 3:
        return None
    name_len = struct.unpack_from("<H", body)[0]
    try:
        name = body[2:2 + name_len].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name:
        return None
    meta = json.dumps({"metadata": {}, "tensors": [{"name": name, "section": 1}]}).encode()
    data = pnnlayout.build(pnnlayout.Layout(sections=[pnnlayout.Section(1, meta),
                                                      pnnlayout.Section(2, body)]))
    global scratch_dir
    if scratch_dir is None:
        import atexit
        import shutil

        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        scratch_dir = tempfile.mkdtemp(prefix="pocketnn-mutator-", dir=shm)
        atexit.register(shutil.rmtree, scratch_dir, True)
    path = os.path.join(scratch_dir, "rewrite.pnn")
    with open(path, "wb") as f:
        f.write(data)
    try:
        with formats.open(path) as f:
            return name, f.tensor(name)
    except (formats.FormatError, MemoryError):
        return None


def _new_shape(size_hint: int, rng: random.Random) -> tuple[int, ...]:
    ndim = rng.choice((1, 2, 2, 4, 4, 3, 0, 5))
    dims = [rng.choice((1, 1, 2, 3, 4, 5, 8, 10, 16, 20, 28, 36, 50, 0)) for _ in range(ndim)]
    if ndim and rng.random() < 0.5:
        dims[0] = max(1, size_hint // max(1, int(_prod(dims[1:]))))
    return tuple(dims)


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def rewrite_tensor(value, rng: random.Random):
    """A new valid tensor from a decoded one: other shape, encoding, codebook mode or width,
    sparsity, or special values. Small: at most 16384 elements."""
    import numpy as np

    import formats

    nprng = np.random.default_rng(rng.randrange(1 << 32))
    if _prod(value.shape) > 16384:  # never densify a big tensor here: the mutator's memory
        return None                 # would count against the target's
    if isinstance(value, formats.CodebookTensor):
        shape = value.shape
        dense_codes = np.full((value.rows, value.row_size), -1, np.int64)
        rows = np.repeat(np.arange(value.rows), np.diff(value.indptr))
        dense_codes[rows, np.asarray(value.indices, np.int64)] = value.codes
        book, scale, bits = value.codebook, value.scale, value.bits
    else:
        shape = value.shape
        dense_codes = None
        book, scale, bits = np.linspace(-1, 1, 4, dtype=np.float32), None, 2
    op = rng.randrange(8)
    if op == 0 or dense_codes is None and op < 4:  # another shape
        shape = _new_shape(_prod(shape) or 16, rng)
        dense_codes = None
    if _prod(shape) > 16384 or len(shape) > 8:
        return None
    k = int(book.shape[-1])
    if dense_codes is None or dense_codes.size != _prod(shape):
        o = shape[0] if shape else 1
        dense_codes = nprng.integers(0, k, (o, _prod(shape[1:]) if shape else 1))
        dense_codes[nprng.random(dense_codes.shape) < rng.random()] = -1
    if op == 1:  # density 0 or 1, or an empty row
        r = rng.random()
        if r < 0.3:
            dense_codes[:] = -1
        elif r < 0.6:
            dense_codes[dense_codes < 0] = nprng.integers(0, k, int((dense_codes < 0).sum()))
        elif dense_codes.shape[0]:
            dense_codes[rng.randrange(dense_codes.shape[0])] = -1
    elif op == 2:  # codebook mode
        o = dense_codes.shape[0]
        flat = np.asarray(book, np.float32).reshape(-1, k)[0]
        r = rng.randrange(3)
        book = flat if r != 1 else np.tile(flat, (o, 1))
        scale = (np.asarray(nprng.choice(SPECIAL_FLOATS[3:], o), np.float32)
                 if r == 2 else None)
    elif op == 3:  # code width
        bits = rng.choice((max(1, (k - 1).bit_length()), 8, 9, 16))
        if k > 1 << bits:
            bits = max(1, (k - 1).bit_length())
    elif op == 4:  # special values in the codebook or scale
        book = np.array(book, np.float32, copy=True)
        book.reshape(-1)[rng.randrange(book.size)] = rng.choice(SPECIAL_FLOATS)
        if scale is not None and scale.size:
            scale = np.array(scale, np.float32, copy=True)
            scale[rng.randrange(scale.size)] = rng.choice(SPECIAL_FLOATS)
    elif op == 5:  # dense float32 / float16
        values = nprng.standard_normal(shape).astype(np.float32)
        if values.size and rng.random() < 0.5:
            values.reshape(-1)[rng.randrange(values.size)] = rng.choice(SPECIAL_FLOATS)
        return values.astype(rng.choice((np.float32, np.float16)))
    elif op == 6:  # a larger codebook
        k = min(1 << bits, rng.choice((1, 2, 3, 16, 256, 1 << bits)))
        book = np.linspace(-1, 1, k, dtype=np.float32)
        scale = None
        dense_codes[dense_codes >= k] = k - 1
    if book.ndim == 2 and book.shape[0] != dense_codes.shape[0]:
        book = book[0]
    if scale is not None and scale.shape != (dense_codes.shape[0],):
        scale = None
    if not shape:
        return nprng.standard_normal(()).astype(np.float32)
    return formats.from_dense_codes(dense_codes.reshape(shape), book, bits, scale)


def _rewrite_section(body: bytes, rng: random.Random) -> bytes | None:
    from formats.writer import encode_tensor

    decoded = _decode_section(body)
    if decoded is None:
        return None
    name, value = decoded
    import numpy as np

    try:
        with np.errstate(all="ignore"):
            new = rewrite_tensor(value, rng)
        return None if new is None else encode_tensor(name, new, rel_bits=rng.choice(
            (None, None, None, 1, 2, 8, 12)))
    except (ValueError, TypeError, OverflowError, MemoryError):
        return None



def mutate_pnn(data: bytes, max_size: int, seed: int, mutate) -> bytes:
    from tests.fuzz import pnnlayout  # here: it imports formats, which the harness instruments

    rng = random.Random(seed)
    r = rng.random()
    if r < 0.15:
        return mutate(data, max_size)
    if r < 0.35:  # byte mutations anywhere, then the CRCs made right again
        return pnnlayout.fix_crcs(mutate(data, max_size), fix_size=rng.random() < 0.7)
    layout = pnnlayout.parse(data)
    if layout is None or not layout.sections:
        return pnnlayout.fix_crcs(mutate(data, max_size), fix_size=True)
    secs = layout.sections
    try:
        if r < 0.6:  # the metadata
            meta = secs[0]
            text = pnnlayout.metadata_json(meta)
            if text is None:
                secs[0] = pnnlayout.Section(meta.kind, _mut(mutate, meta.body, max_size),
                                            meta.r0, meta.r1)
            else:
                compress = None if rng.random() < 0.9 else rng.random() < 0.5
                secs[0] = pnnlayout.with_metadata(
                    meta, mutate_json_text(text, mutate, max_size, rng), compress)
        elif r < 0.87:  # one tensor section: rewritten, a header field or any byte of it
            i = rng.randrange(1, len(secs)) if len(secs) > 1 else 0
            body = bytearray(secs[i].body)
            head = pnnlayout.tensor_head_span(bytes(body))
            u = rng.random()
            rewritten = _rewrite_section(bytes(body), rng) if i and u < 0.3 else None
            if rewritten is not None:
                secs[i].body = rewritten
            elif body and u < 0.65:
                for _ in range(1 + (rng.random() < 0.3)):
                    _put_int(body, rng.randrange(max(head, 1)), rng)
                secs[i].body = bytes(body)
            else:
                secs[i].body = _mut(mutate, bytes(body), max_size)
        elif r < 0.95:  # the section list
            op = rng.randrange(5)
            i, j = rng.randrange(len(secs)), rng.randrange(len(secs))
            if op == 0 and len(secs) > 1:
                del secs[i]
            elif op == 1:
                secs.insert(j, pnnlayout.Section(secs[i].kind, secs[i].body))
            elif op == 2:
                secs[i], secs[j] = secs[j], secs[i]
            elif op == 3:
                secs[i].kind = rng.choice((1, 2, 3, 4, 0, 0x80000001, 0x80000002, 0xFFFFFFFF))
            else:
                setattr(secs[i], rng.choice(("r0", "r1")), _interesting_int(rng))
        else:  # the header's fields
            field = rng.choice(("major", "minor", "flags", "reserved"))
            setattr(layout, field, rng.choice((0, 1, 2, 0xFFFF, 1 << 16, 0x8000,
                                               _interesting_int(rng))))
        out = pnnlayout.build(layout)
    except (ValueError, OverflowError, struct.error, IndexError):
        out = None
    return out if _fits(out, max_size) else mutate(data, max_size)


# ---- inputs: selector byte + file ------------------------------------------------------------


def _mutate_npy(payload: bytes, mutate, max_size: int, rng: random.Random) -> bytes:
    """Edit the .npy header dict (as text) or its version/length fields."""
    if len(payload) < 10 or not payload.startswith(b"\x93NUMPY"):
        return _mut(mutate, payload, max_size)
    major = payload[6]
    hlen_size = 2 if major == 1 else 4
    hlen = int.from_bytes(payload[8:8 + hlen_size], "little")
    start = 8 + hlen_size
    header, data = payload[start:start + hlen], payload[start + hlen:]
    r = rng.random()
    if r < 0.5:
        edits = (
            (b"'descr': ", [b"'|u1'", b"'<f4'", b"'>f4'", b"'<f8'", b"'|b1'", b"'<i8'",
                           b"'<c8'", b"'O'", b"'<U1'", b"[('a', '<f4')]", b"('<f4', (2,))",
                           b"'<f2'", b"'>i2'", b"'|V4'", b"'<M8[s]'"]),
            (b"'fortran_order': ", [b"True", b"False", b"1", b"None"]),
            (b"'shape': ", [b"()", b"(0,)", b"(28, 28)", b"(1, 28, 28)", b"(2, 1, 28, 28)",
                           b"(-1, 28)", b"(28, 28, 0)", b"(4294967296, 4294967296)",
                           b"(1,) * 70", b"(9223372036854775807,)", b"(1.5,)", b"[28, 28]",
                           b"(28, 28, 1, 1, 1)", b"(784,)", b"(3, 28, 28)", b"(False,)",
                           b"(28, True)"]),
        )
        key, choices = rng.choice(edits)
        at = header.find(key)
        if at >= 0:
            end = header.find(b", '", at + len(key))
            end = header.find(b", }", at) if end < 0 else end
            if end > at:
                header = header[:at + len(key)] + rng.choice(choices) + header[end:]
    elif r < 0.75:
        header = _mut(mutate, header, max_size)
    else:
        data = _mut(mutate, data, max_size) if data and rng.random() < 0.3 else \
            data[:rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data + data
    if rng.random() < 0.9:  # keep the header length right most of the time
        hlen = len(header)
    else:
        hlen = _interesting_int(rng) % (1 << (8 * hlen_size))
    if rng.random() < 0.05:
        major = rng.choice((1, 2, 3, 0))
        hlen_size = 2 if major == 1 else 4
        hlen = len(header)
    head = payload[:6] + bytes([major, payload[7]]) + \
        (hlen % (1 << (8 * hlen_size))).to_bytes(hlen_size, "little")
    return head + header + data


def _mutate_idx(payload: bytes, mutate, max_size: int, rng: random.Random) -> bytes:
    buf = bytearray(payload)
    if len(buf) >= 4 and rng.random() < 0.6:
        r = rng.random()
        if r < 0.3:
            buf[2] = rng.choice((0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x00, 0xFF))
        elif r < 0.5:
            buf[3] = rng.choice((0, 1, 2, 3, 4, 5, 255))
        else:  # one dimension
            ndim = min(buf[3], max(0, (len(buf) - 4) // 4))
            if ndim:
                at = 4 + 4 * rng.randrange(ndim)
                v = _interesting_int(rng) % (1 << 32)
                buf[at:at + 4] = v.to_bytes(4, "big")
        return bytes(buf)
    return _mut(mutate, payload, max_size)


def _mutate_inner(payload: bytes, mutate, max_size: int, rng: random.Random) -> bytes:
    if payload.startswith(b"\x93NUMPY"):
        return _mutate_npy(payload, mutate, max_size, rng)
    return _mutate_idx(payload, mutate, max_size, rng)


def _gunzip(payload: bytes, limit: int = 1 << 20) -> bytes | None:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(payload, limit)
    except zlib.error:
        return None
    return out if d.eof else None


def _mutate_npz(payload: bytes, mutate, max_size: int, rng: random.Random) -> bytes | None:
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as z:
            infos = z.infolist()
            if not infos or len(infos) > 16 or sum(i.file_size for i in infos) > 1 << 20:
                return None
            members = [(i.filename, z.read(i), i.compress_type) for i in infos]
    except Exception:  # noqa: BLE001 - any broken zip: fall back to byte mutations
        return None
    i = rng.randrange(len(members))
    name, body, method = members[i]
    r = rng.random()
    if r < 0.7:
        body = _mutate_inner(body, mutate, max_size, rng)
    elif r < 0.8:
        name = rng.choice(("x.npy", "y.npy", "images.npy", "labels.npy", "x", "a.npy",
                           "x.npy.npy", "../x.npy", "dir/x.npy"))
    elif r < 0.9:
        members.append((rng.choice(("y.npy", "labels.npy", "x.npy", "z.npy")), body, method))
    else:
        method = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                             zipfile.ZIP_LZMA))
    members[i] = (name, body, method)
    out = io.BytesIO()
    try:
        with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as z:
            warnings.simplefilter("ignore")  # duplicate member names are on purpose
            for n, b, m in members:
                info = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = m
                z.writestr(info, b)
    except Exception:  # noqa: BLE001
        return None
    return out.getvalue()


SUFFIXES = (".npy", ".npz", "-images-idx3-ubyte", "-images-idx3-ubyte.gz")


def mutate_input(data: bytes, max_size: int, seed: int, mutate) -> bytes:
    rng = random.Random(seed)
    if not data:
        return mutate(data, max_size)
    r = rng.random()
    if r < 0.2:
        return mutate(data, max_size)
    sel, payload = data[0], data[1:]
    if r < 0.25:  # the same bytes read as another kind of file
        return bytes([rng.randrange(256)]) + payload
    room = max_size - 1
    out = None
    if payload.startswith(b"\x1f\x8b"):
        inner = _gunzip(payload)
        if inner is not None:
            out = gzip.compress(_mutate_inner(inner, mutate, room, rng), mtime=0)
    elif payload.startswith(b"PK"):
        out = _mutate_npz(payload, mutate, room, rng)
    else:
        out = _mutate_inner(payload, mutate, room, rng)
    if out is None or len(out) > room:
        return mutate(data, max_size)
    return bytes([sel]) + out
