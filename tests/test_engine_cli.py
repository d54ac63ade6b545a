"""`python -m engine infer|info|bench` as a user runs it, good inputs and bad."""

import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import formats
from engine.cli import DEMO_MODEL, DEMO_SAMPLES
from engine.kernels._jit import HAVE_NUMBA, WHY_NO_NUMBA
from engine.runtime import read_graph

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, cwd=None, ok=True):
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=cwd or ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def assert_one_line_error(p, *needles):
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])


def write_idx(path, images, gz=False):
    data = struct.pack(">BBBB", 0, 0, 0x08, images.ndim)
    data += struct.pack(f">{images.ndim}I", *images.shape) + images.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.fixture(scope="module")
def samples():
    with np.load(DEMO_SAMPLES) as f:
        return f["x"], f["y"]


def test_infer_with_no_arguments_runs_the_bundled_demo_from_any_folder(tmp_path, samples):
    p = run("infer", cwd=tmp_path)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == len(samples[1]) + 2
    assert lines[-2].startswith("accuracy: ") and lines[-1].startswith("backend: ")
    assert "Ankle boot" in p.stdout


def test_infer_json_document(samples):
    d = json.loads(run("infer", "--json", "--top", "5").stdout)
    assert d["backend"] in ("numba", "numpy") and d["seconds"] > 0
    results = d["results"]
    assert len(results) == len(samples[1])
    for item, truth in zip(results, samples[1], strict=True):
        probs = [t["prob"] for t in item["top"]]
        assert len(item["top"]) == 5 and probs == sorted(probs, reverse=True)
        assert {"index", "label", "prob"} <= set(item["top"][0])
        assert item["true"]["index"] == truth
    top1 = np.array([r["top"][0]["index"] for r in results])
    assert d["accuracy"] == pytest.approx(np.mean(top1 == samples[1]))
    assert d["accuracy"] > 0.8  # a trained model, not noise


def test_every_input_layout_gives_the_same_answers(tmp_path, samples):
    x, y = samples[0][:12], samples[1][:12]
    np.save(tmp_path / "nchw.npy", x[:, None])
    np.save(tmp_path / "one.npy", x[0])
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    write_idx(tmp_path / "t-images-idx3-ubyte", x)
    write_idx(tmp_path / "z-images-idx3-ubyte.gz", x, gz=True)
    write_idx(tmp_path / "z-labels-idx1-ubyte.gz", y, gz=True)  # found beside the images
    base = json.loads(run("infer", DEMO_MODEL, tmp_path / "xy.npz", "--json").stdout)
    want = [r["top"][0]["index"] for r in base["results"]]
    for name in ("nchw.npy", "t-images-idx3-ubyte", "z-images-idx3-ubyte.gz"):
        d = json.loads(run("infer", DEMO_MODEL, tmp_path / name, "--json", "--batch", "5").stdout)
        assert [r["top"][0]["index"] for r in d["results"]] == want, name
    d = json.loads(run("infer", DEMO_MODEL, tmp_path / "z-images-idx3-ubyte.gz", "--json").stdout)
    assert d["accuracy"] == base["accuracy"]
    one = json.loads(run("infer", DEMO_MODEL, tmp_path / "one.npy", "--json").stdout)
    assert [r["top"][0]["index"] for r in one["results"]] == want[:1]


@pytest.mark.skipif(not HAVE_NUMBA, reason=f"one backend only: {WHY_NO_NUMBA}")
def test_backends_give_the_same_answers():
    a = json.loads(run("infer", "--json", "--backend", "numpy").stdout)
    b = json.loads(run("infer", "--json", "--backend", "numba").stdout)
    assert a["backend"] == "numpy" and b["backend"] == "numba"
    for ra, rb in zip(a["results"], b["results"], strict=True):
        assert [t["index"] for t in ra["top"]] == [t["index"] for t in rb["top"]]
        assert ra["top"][0]["prob"] == pytest.approx(rb["top"][0]["prob"], rel=1e-4, abs=1e-6)


def test_info_table_and_json():
    text = run("info", DEMO_MODEL).stdout
    assert "conv1" in text and "fc2" in text and "compression ratio" in text
    d = json.loads(run("info", DEMO_MODEL, "--json").stdout)
    assert d["params"] == 431080 and d["file_bytes"] == os.path.getsize(DEMO_MODEL)
    assert d["ratio"] == pytest.approx(4 * 431080 / d["file_bytes"])
    assert [r["name"] for r in d["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert sum(r["nonzeros"] for r in d["layers"]) == d["nonzeros"] < d["params"]


def test_bench_json():
    d = json.loads(run("bench", "--batch", "4", "--seconds", "0.2", "--json").stdout)
    assert d["batch"] == 4 and d["runs"] >= 5 and d["median_ms"] > 0
    assert len(d["layers"]) >= 4


# ---- bad input: one line on stderr naming the problem and the file, non-zero exit ----------

@pytest.fixture
def demo_bytes():
    return DEMO_MODEL.read_bytes()


def test_truncated_model(tmp_path, demo_bytes):
    bad = tmp_path / "cut.pnn"
    bad.write_bytes(demo_bytes[: len(demo_bytes) // 2])
    assert_one_line_error(run("infer", bad, ok=False), "cut.pnn")


def test_wrong_magic(tmp_path, demo_bytes):
    bad = tmp_path / "magic.pnn"
    bad.write_bytes(b"GGUF" + demo_bytes[4:])
    assert_one_line_error(run("info", bad, ok=False), "magic.pnn", "magic")


def test_flipped_byte_in_a_tensor(tmp_path, demo_bytes):
    with formats.open(DEMO_MODEL) as f:
        info = f.info("fc1.weight")
    data = bytearray(demo_bytes)
    data[info.offset + info.nbytes // 2] ^= 0x40
    bad = tmp_path / "flip.pnn"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run("infer", bad, ok=False), "flip.pnn", "checksum")


def test_missing_model_and_missing_input(tmp_path):
    assert_one_line_error(run("infer", tmp_path / "nope.pnn", ok=False), "nope.pnn")
    assert_one_line_error(run("infer", DEMO_MODEL, tmp_path / "nope.npy", ok=False), "nope.npy")


def test_input_of_the_wrong_shape(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(run("infer", DEMO_MODEL, tmp_path / "wide.npy", ok=False),
                          "wide.npy", "(3, 32, 32)")


def test_garbage_input_file(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    assert_one_line_error(run("infer", DEMO_MODEL, tmp_path / "junk.npy", ok=False), "junk.npy")


def test_unknown_op_in_a_file(tmp_path):
    from engine.runtime import read_graph

    graph = read_graph(DEMO_MODEL).copy()
    graph.nodes[1].op = "conv3d"
    path = tmp_path / "op.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    assert_one_line_error(run("infer", path, ok=False), "op.pnn", "conv3d")


def test_numba_backend_without_numba_is_a_clear_error():
    env = dict(os.environ, PYTHONPATH=ROOT, POCKETNN_DISABLE_NUMBA="1")
    p = subprocess.run([sys.executable, "-m", "engine", "infer", "--backend", "numba"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert_one_line_error(p, "Numba")
    p = subprocess.run([sys.executable, "-m", "engine", "infer", "--json"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and json.loads(p.stdout)["backend"] == "numpy"


def test_malformed_graph_metadata(tmp_path):
    path = tmp_path / "meta.pnn"
    formats.write(path, {"graph": {"nodes": 3}}, {})
    for command in ("infer", "info"):
        assert_one_line_error(run(command, path, ok=False), "meta.pnn", "malformed graph")


# ---- bugs and the machine's own limits: one line, never a raw traceback -----------------------

@pytest.mark.parametrize("raised, code, needle", [
    (IndexError("index 7 is out of bounds"), 2, "internal error (IndexError: index 7 is out of "
                                                "bounds): a bug in pocketnn, please report it"),
    (OverflowError("int too large"), 2, "internal error (OverflowError"),
    (MemoryError(), 1, "ran out of memory below --max-memory; lower --batch"),
    (PermissionError(13, "Permission denied", "/x/model.pnn"), 1, "/x/model.pnn"),
])
def test_unexpected_failures_are_one_line(monkeypatch, capsys, raised, code, needle):
    import engine.cli

    def boom(*args, **kwargs):
        raise raised

    monkeypatch.setattr(engine.cli, "load", boom)
    assert engine.cli.main(["infer"]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert needle in err, err
    if code == 2:
        assert "add --debug for the traceback" in err
        assert engine.cli.main(["infer", "--debug"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and needle in err.splitlines()[-1]


def test_numba_typing_errors_from_a_file_cannot_happen(tmp_path):
    """What used to reach Numba's type inference from a file (a stride of 10**20) is refused
    when the attributes are read: the CLI says so in one line."""
    graph = read_graph(DEMO_MODEL).copy()
    graph.nodes[2].attrs["stride"] = 10**20
    path = tmp_path / "stride.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    assert_one_line_error(run("infer", path, ok=False), path, "stride=")


def test_limits_on_the_command_line(tmp_path):
    p = run("infer", "--max-macs", "1e5", ok=False)
    assert_one_line_error(p, "multiply-adds per image, over the limit of 100,000 (max_macs)")
    p = run("infer", "--max-memory", "100K", ok=False)
    assert_one_line_error(p, "over the limit of 100 KiB (max_memory)")
    p = run("info", DEMO_MODEL, "--max-memory", "lots", ok=False)
    assert p.returncode == 2 and "expected a size such as 512M" in p.stderr
    d = json.loads(run("info", DEMO_MODEL, "--json", "--backend", "numpy").stdout)
    assert d["peak_bytes_per_image"] > 0 and d["macs"] > 0 and d["max_batch"] > 1000
    assert all(r["bytes_per_nonzero"] >= 8 for r in d["layers"])  # SciPy: float + int32


@pytest.mark.skipif(not HAVE_NUMBA, reason=f"needs Numba: {WHY_NO_NUMBA}")
def test_codebook_kernels_hold_under_4_bytes_per_nonzero():
    """The Numba path keeps what the file decoded to: uint16 columns, uint8 codes, row
    pointers; under the 4 bytes of a dense float per nonzero in every layer of the demo."""
    d = json.loads(run("info", DEMO_MODEL, "--json", "--backend", "numba").stdout)
    assert [r["kernel"] for r in d["layers"]] == ["conv2d_nchw_csr_codebook"] * 2 + [
        "gemm_csr_codebook"] * 2
    assert all(r["bytes_per_nonzero"] < 4 for r in d["layers"]), d["layers"]
