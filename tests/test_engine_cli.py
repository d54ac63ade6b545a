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
    np.save(tmp_path / "nhwc.npy", x[:, :, :, None])
    base = json.loads(run("infer", "-m", DEMO_MODEL, tmp_path / "xy.npz", "--json").stdout)
    want = [r["top"][0]["index"] for r in base["results"]]
    for name in ("nchw.npy", "nhwc.npy", "t-images-idx3-ubyte", "z-images-idx3-ubyte.gz"):
        d = json.loads(run("infer", "-m", DEMO_MODEL, tmp_path / name, "--json", "--batch", "5"
                           ).stdout)
        assert [r["top"][0]["index"] for r in d["results"]] == want, name
    d = json.loads(run("infer", "-m", DEMO_MODEL, tmp_path / "z-images-idx3-ubyte.gz", "--json"
                       ).stdout)
    assert d["accuracy"] == base["accuracy"]
    one = json.loads(run("infer", "-m", DEMO_MODEL, tmp_path / "one.npy", "--json").stdout)
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
    text = run("info", "-m", DEMO_MODEL).stdout
    assert "conv1" in text and "fc2" in text and "compression ratio" in text
    assert run("info", DEMO_MODEL).stdout == text  # the positional form still works
    d = json.loads(run("info", "--json").stdout)  # default: the bundled demo
    assert d["params"] == 431080 and d["file_bytes"] == os.path.getsize(DEMO_MODEL)
    assert d["ratio"] == pytest.approx(4 * 431080 / d["file_bytes"])
    assert [r["name"] for r in d["layers"]] == ["conv1", "conv2", "fc1", "fc2"]
    assert sum(r["nonzeros"] for r in d["layers"]) == d["nonzeros"] < d["params"]


def test_bench_json():
    d = json.loads(run("bench", "--batch", "4", "--seconds", "0.2", "--json").stdout)
    assert d["batch"] == 4 and d["runs"] >= 5 and d["median_ms"] > 0
    assert len(d["layers"]) >= 4


# ---- the model, -m, and files in the wrong place ---------------------------------------------

def test_model_flag_and_the_positional_form_before_it(tmp_path, samples):
    np.save(tmp_path / "x.npy", samples[0][:4])
    a = json.loads(run("infer", "-m", DEMO_MODEL, tmp_path / "x.npy", "--json").stdout)
    b = json.loads(run("infer", DEMO_MODEL, tmp_path / "x.npy", "--json").stdout)  # kept
    c = json.loads(run("infer", tmp_path / "x.npy", "--json").stdout)  # default: the demo
    assert a["model"] == b["model"] == c["model"] == str(DEMO_MODEL)
    assert a["results"] == b["results"] == c["results"] and len(a["results"]) == 4


def test_a_model_among_the_inputs_says_pass_it_with_m(tmp_path):
    copy = tmp_path / "other.pnn"
    copy.write_bytes(DEMO_MODEL.read_bytes())
    for args in (("-m", DEMO_MODEL, copy), (DEMO_MODEL, copy), (DEMO_SAMPLES, copy)):
        assert_one_line_error(run("infer", *args, ok=False),
                              f"{copy}: a model, not an input: pass one model, with -m MODEL")
    renamed = tmp_path / "weights.bin"  # found by its bytes, whatever its name
    renamed.write_bytes(DEMO_MODEL.read_bytes())
    assert_one_line_error(run("infer", "-m", DEMO_MODEL, renamed, ok=False),
                          "weights.bin: a model, not an input")


@pytest.mark.parametrize("name, write, looks", [
    ("x.npy", lambda p: np.save(p, np.zeros((28, 28), np.uint8)), "a .npy array"),
    ("x.npz", lambda p: np.savez(p, x=np.zeros((28, 28), np.uint8)), "an .npz archive"),
    ("photo.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40)), "a PNG image"),
    ("t-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((2, 28, 28))), "an IDX file"),
    ("resnet.onnx", lambda p: p.write_bytes(b"\x08\x07"),
     "an ONNX model); convert it first: python -m compress import"),
])
def test_an_input_passed_as_the_model_says_what_it_looks_like(tmp_path, name, write, looks):
    path = tmp_path / name
    write(path)
    for command in (("infer", "-m", path), ("info", "-m", path), ("bench", "-m", path)):
        assert_one_line_error(run(*command, ok=False),
                              f"{path}: not a .pnn model (it looks like {looks}")


def test_top_k_default_and_flag(tmp_path, samples):
    np.save(tmp_path / "two.npy", samples[0][:2])
    lines = run("infer", tmp_path / "two.npy").stdout.splitlines()[:2]
    assert all(line.count("  ") == 4 for line in lines)  # 5 classes of the 10 by default
    d = json.loads(run("infer", tmp_path / "two.npy", "--top", "2", "--json").stdout)
    assert [len(r["top"]) for r in d["results"]] == [2, 2]
    d = json.loads(run("infer", tmp_path / "two.npy", "--top", "50", "--json").stdout)
    assert [len(r["top"]) for r in d["results"]] == [10, 10]  # capped at the classes
    probs = [t["prob"] for t in d["results"][0]["top"]]
    assert sum(probs) == pytest.approx(1.0) and probs == sorted(probs, reverse=True)


def test_float_images_in_0_1_are_refused_with_the_way_out(tmp_path, samples):
    x = samples[0][:3]
    np.save(tmp_path / "unit.npy", x.astype(np.float32) / 255)
    np.save(tmp_path / "raw.npy", x.astype(np.float32))
    np.save(tmp_path / "wide.npy", x.astype(np.int32) * 300)
    assert_one_line_error(run("infer", tmp_path / "unit.npy", ok=False),
                          "unit.npy: values in 0..1 look like 0..1 pixels; the model takes raw "
                          "pixels in 0..255", "--input-range 0..1", "multiply them by 255")
    assert_one_line_error(run("infer", tmp_path / "wide.npy", ok=False),
                          "wide.npy: integer values in 0..76500; the model takes raw pixels in "
                          "0..255")
    want = json.loads(run("infer", tmp_path / "raw.npy", "--json").stdout)["results"]
    got = json.loads(run("infer", tmp_path / "unit.npy", "--input-range", "0..1", "--json"
                         ).stdout)["results"]
    assert [r["top"][0]["index"] for r in got] == [r["top"][0]["index"] for r in want]
    p = run("infer", tmp_path / "unit.npy", "--input-range", "1..0", ok=False)
    assert p.returncode == 2 and "expected LO..HI such as 0..1" in p.stderr


def test_info_describes_the_interface_and_every_node():
    d = json.loads(run("info", "--json").stdout)
    text = run("info").stdout
    graph = read_graph(DEMO_MODEL)
    assert [n["name"] for n in d["nodes"]] == [n.name for n in graph.nodes]
    for node in graph.nodes:
        assert any(line.split()[:2] == [node.name, node.op] for line in text.splitlines())
    assert d["input"] == {"name": graph.input_name, "shape": [1, 28, 28]}
    assert d["output"]["shape"] == [10] and d["output"]["softmax"] == "by the engine"
    assert d["labels"] == graph.labels and d["preprocess"]["raw_range"] == [0, 255]
    assert "input: input (N, 1, 28, 28)" in text and "labels: T-shirt/top, Trouser" in text


def test_info_on_a_branching_graph_names_what_each_node_reads(tmp_path):
    """A side branch off conv1 (two ReLUs nobody reads further): pool1 then reads conv1, not
    the row above it; the table says so, and lists every node in execution order."""
    from engine.ir import Node

    graph = read_graph(DEMO_MODEL).copy()
    graph.nodes[1:1] = [Node("relu", "side", ["conv1"], ["side"]),
                        Node("relu", "side2", ["side"], ["side2"])]
    path = tmp_path / "branch.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    d = json.loads(run("info", "-m", path, "--json").stdout)
    assert [n["name"] for n in d["nodes"]][:4] == ["conv1", "side", "side2", "pool1"]
    assert d["nodes"][3]["reads"] == ["conv1"] and d["nodes"][0]["reads"] == ["input"]
    rows = {line.split()[0]: line.split() for line in run("info", "-m", path).stdout.splitlines()
            if line.split()}
    assert rows["node"][:4] == ["node", "op", "reads", "output"]
    assert rows["pool1"][:3] == ["pool1", "maxpool2d", "conv1"]
    assert rows["conv2"][:3] == ["conv2", "conv2d", "50x8x8"]  # reads the row above: blank


def test_info_path_prints_where_the_bundled_model_lives(tmp_path):
    assert run("info", "--path", cwd=tmp_path).stdout.strip() == str(DEMO_MODEL)
    assert run("info", "-m", DEMO_MODEL, "--path").stdout.strip() == str(DEMO_MODEL)


# ---- image files through the CLI ------------------------------------------------------------

@pytest.fixture(scope="module")
def image_setup(tmp_path_factory):
    """An RGB model that resizes (ImageNet-style preprocessing) and two photos."""
    pil = pytest.importorskip("PIL.Image", reason="Pillow is the optional pocketnn[images]")
    from skimage import data

    from engine.ir import Graph, Node, Preprocess

    d = tmp_path_factory.mktemp("images")
    w = np.random.default_rng(1).standard_normal((3, 3 * 16 * 16)).astype(np.float32) * 0.01
    g = Graph([Node("flatten", "flat", ["input"], ["f"]),
               Node("linear", "fc", ["f"], ["logits"], {}, {"weight": "w", "bias": "b"})],
              "input", (3, 16, 16), "logits", {"w": w, "b": np.zeros(3, np.float32)},
              labels=["astronaut", "cat", "coffee"],
              preprocess=Preprocess(scale=1 / 255, mean=[0.485, 0.456, 0.406],
                                    std=[0.229, 0.224, 0.225], resize=18))
    formats.write(d / "rgb.pnn", g.to_metadata(), g.tensors)
    pil.fromarray(data.astronaut()).save(d / "astronaut.jpg", quality=90)
    pil.fromarray(data.chelsea()).save(d / "chelsea.png")
    return d


def test_images_in_names_out(image_setup):
    d = image_setup
    p = run("infer", "-m", d / "rgb.pnn", d / "astronaut.jpg", d / "chelsea.png")
    lines = p.stdout.splitlines()
    assert lines[0].startswith(f"{d / 'astronaut.jpg'}: ")
    assert lines[1].startswith(f"{d / 'chelsea.png'}: ")
    assert all(name in lines[0] for name in ("astronaut", "cat", "coffee"))  # 3 < 5: all shown
    doc = json.loads(run("infer", "-m", d / "rgb.pnn", d / "chelsea.png", "--json",
                         "--top", "1").stdout)
    (item,) = doc["results"]
    assert item["input"] == str(d / "chelsea.png") and len(item["top"]) == 1
    assert item["top"][0]["label"] in ("astronaut", "cat", "coffee")


def test_a_photo_for_a_model_that_does_not_resize(image_setup):
    d = image_setup
    assert_one_line_error(run("infer", d / "chelsea.png", ok=False),
                          "chelsea.png: a 451x300 image; the model takes 28x28 images and its "
                          "preprocessing does not resize: resize the image to 28x28 first")


def test_a_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("hello\n")
    assert_one_line_error(run("infer", tmp_path / "notes.jpg", ok=False),
                          "notes.jpg: not a JPEG, PNG, BMP, GIF, WebP or PGM/PPM image")


def test_without_pillow_a_photo_is_one_line(image_setup, monkeypatch, capsys):
    import engine.cli

    monkeypatch.setitem(sys.modules, "PIL", None)
    photo = str(image_setup / "chelsea.png")
    assert engine.cli.main(["infer", "-m", str(image_setup / "rgb.pnn"), photo]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: reading {photo} needs Pillow: pip install 'pocketnn[images]'"


# ---- bad input: one line on stderr naming the problem and the file, non-zero exit ----------

@pytest.fixture
def demo_bytes():
    return DEMO_MODEL.read_bytes()


def test_truncated_model(tmp_path, demo_bytes):
    bad = tmp_path / "cut.pnn"
    bad.write_bytes(demo_bytes[: len(demo_bytes) // 2])
    assert_one_line_error(run("infer", "-m", bad, ok=False), "cut.pnn")


def test_wrong_magic(tmp_path, demo_bytes):
    bad = tmp_path / "magic.pnn"
    bad.write_bytes(b"GGUF" + demo_bytes[4:])
    assert_one_line_error(run("info", "-m", bad, ok=False), "magic.pnn", "magic")


def test_flipped_byte_in_a_tensor(tmp_path, demo_bytes):
    with formats.open(DEMO_MODEL) as f:
        info = f.info("fc1.weight")
    data = bytearray(demo_bytes)
    data[info.offset + info.nbytes // 2] ^= 0x40
    bad = tmp_path / "flip.pnn"
    bad.write_bytes(bytes(data))
    assert_one_line_error(run("infer", "-m", bad, ok=False), "flip.pnn", "checksum")


def test_missing_model_and_missing_input(tmp_path):
    assert_one_line_error(run("infer", tmp_path / "nope.pnn", ok=False), "nope.pnn")
    assert_one_line_error(run("infer", "-m", tmp_path / "nope.pnn", ok=False), "nope.pnn")
    assert_one_line_error(run("infer", "-m", DEMO_MODEL, tmp_path / "nope.npy", ok=False),
                          "nope.npy: no such file")
    assert_one_line_error(run("infer", tmp_path / "nope.png", ok=False), "nope.png: no such file")


def test_input_of_the_wrong_shape(tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((3, 32, 32), np.uint8))
    assert_one_line_error(run("infer", "-m", DEMO_MODEL, tmp_path / "wide.npy", ok=False),
                          "wide.npy", "(3, 32, 32)")


def test_garbage_input_file(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    assert_one_line_error(run("infer", "-m", DEMO_MODEL, tmp_path / "junk.npy", ok=False),
                          "junk.npy")


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
    p = run("info", "--max-memory", "lots", ok=False)
    assert p.returncode == 2 and "expected a size such as 512M" in p.stderr
    d = json.loads(run("info", "--json", "--backend", "numpy").stdout)
    assert d["peak_bytes_per_image"] > 0 and d["macs"] > 0 and d["max_batch"] > 1000
    assert all(r["bytes_per_nonzero"] >= 8 for r in d["layers"])  # SciPy: float + int32


@pytest.mark.skipif(not HAVE_NUMBA, reason=f"needs Numba: {WHY_NO_NUMBA}")
def test_codebook_kernels_hold_under_4_bytes_per_nonzero():
    """The Numba path keeps what the file decoded to: uint16 columns, uint8 codes, row
    pointers; under the 4 bytes of a dense float per nonzero in every layer of the demo."""
    d = json.loads(run("info", "--json", "--backend", "numba").stdout)
    assert [r["kernel"] for r in d["layers"]] == ["conv2d_nchw_csr_codebook"] * 2 + [
        "gemm_csr_codebook"] * 2
    assert all(r["bytes_per_nonzero"] < 4 for r in d["layers"]), d["layers"]
