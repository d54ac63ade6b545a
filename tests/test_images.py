"""Images in, names out: decoding, orientation, resize and crop against an independent
computation (Pillow's own resize, the crop done here by slicing), hostile image files, and the
Python API (`engine.preprocess`, `engine.predict`)."""

import os
import struct
import sys
import time
import zlib

import numpy as np
import pytest

PIL = pytest.importorskip("PIL", reason="Pillow is the optional pocketnn[images]")
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

import engine  # noqa: E402
import formats  # noqa: E402
from engine.classify import Top, ends_in_softmax, predict, preprocess  # noqa: E402
from engine.images import crop_start, read_image, resized_size  # noqa: E402
from engine.inputs import MAX_INPUT_BYTES, InputError  # noqa: E402
from engine.ir import Graph, Node, Preprocess  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchvision's ImageNet figures
LABELS = ["tench", "goldfish", "great white shark", "tiger shark"]


def tiny_model(path, input_shape=(3, 24, 32), resize=40, softmax=False, scale=1 / 255):
    """flatten -> linear (4 classes) [-> softmax] with ImageNet-style preprocessing."""
    c = input_shape[0]
    w = np.random.default_rng(0).standard_normal((4, int(np.prod(input_shape))))
    nodes = [Node("flatten", "flat", ["input"], ["f"]),
             Node("linear", "fc", ["f"], ["logits"], {}, {"weight": "fc.w", "bias": "fc.b"})]
    if softmax:
        nodes.append(Node("softmax", "prob", ["logits"], ["probs"], {"axis": 1}))
    g = Graph(nodes, "input", input_shape, nodes[-1].outputs[0],
              {"fc.w": (w * 0.01).astype(np.float32), "fc.b": np.zeros(4, np.float32)},
              labels=LABELS, preprocess=Preprocess(scale=scale, mean=MEAN[:c] if c == 3 else
                                                   [0.5], std=STD[:c] if c == 3 else [0.25],
                                                   resize=resize))
    formats.write(path, g.to_metadata(), g.tensors)
    return engine.load(path, backend="numpy")


def save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


def chw(a):
    a = np.asarray(a)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def one_line(e, path):
    text = str(e.value)
    assert "\n" not in text and os.path.basename(str(path)) in text, text
    return text


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    return {"astronaut.png": save(Image.fromarray(data.astronaut()), d / "astronaut.png"),
            "chelsea.png": save(Image.fromarray(data.chelsea()), d / "chelsea.png"),
            "chelsea.jpg": save(Image.fromarray(data.chelsea()), d / "chelsea.jpg", quality=90),
            "camera.png": save(Image.fromarray(data.camera()), d / "camera.png")}


# ---- geometry: torchvision's rounding, as known figures ------------------------------------

@pytest.mark.parametrize("size, short, want", [
    ((500, 375), 256, (341, 256)),   # landscape: long = int(256 * 500 / 375) = int(341.33)
    ((375, 500), 256, (256, 341)),
    ((451, 300), 40, (60, 40)),      # chelsea: int(60.13)
    ((300, 300), 224, (224, 224)),
    ((1, 999), 8, (8, 7992)),
])
def test_resized_size_truncates_the_long_side(size, short, want):
    assert resized_size(*size, short) == want


@pytest.mark.parametrize("size, crop, want", [
    (256, 224, 16), (341, 224, 58),  # round(58.5) = 58: Python rounds half to even
    (257, 224, 16), (259, 224, 18),  # round(16.5) = 16, round(17.5) = 18
    (224, 224, 0), (200, 224, -12), (201, 224, -11),  # padded: (crop - size) // 2 before
])
def test_crop_start_is_torchvision_center_crop(size, crop, want):
    assert crop_start(size, crop) == want


# ---- decoding, resize, crop against Pillow + slicing -----------------------------------------

def expected(path, input_shape, resize, mode="RGB"):
    """Independent: Pillow decode + convert + Pillow resize, the centre crop by slicing with
    NumPy's zero padding (torchvision's CenterCrop written out)."""
    c, h, w = input_shape
    img = Image.open(path).convert(mode)
    W, H = img.size
    if W <= H:
        size = (resize, int(resize * H / W))
    else:
        size = (int(resize * W / H), resize)
    a = np.asarray(img.resize(size, Image.Resampling.BILINEAR))
    if a.ndim == 2:
        a = a[:, :, None]
    ph, pw = max(h - a.shape[0], 0), max(w - a.shape[1], 0)
    a = np.pad(a, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    top, left = int(round((a.shape[0] - h) / 2)), int(round((a.shape[1] - w) / 2))
    return a[top:top + h, left:left + w].transpose(2, 0, 1)


@pytest.mark.parametrize("name", ["astronaut.png", "chelsea.png", "chelsea.jpg"])
@pytest.mark.parametrize("input_shape, resize", [
    ((3, 24, 32), 40),   # crop inside
    ((3, 48, 40), 40),   # taller than the resized image on one side: zero rows added
    ((3, 224, 224), 256),
    ((1, 28, 28), 32),   # grey model: convert("L")
])
def test_resize_and_crop_match_pillow_and_slicing(photos, name, input_shape, resize):
    got = read_image(photos[name], input_shape, resize, max_bytes=MAX_INPUT_BYTES)
    assert got.shape == (1, *input_shape) and got.dtype == np.uint8
    want = expected(photos[name], input_shape, resize, "L" if input_shape[0] == 1 else "RGB")
    np.testing.assert_array_equal(got[0], want)


def test_an_image_already_the_input_size_is_not_resampled(photos):
    img = np.asarray(Image.open(photos["chelsea.jpg"]))
    got = read_image(photos["chelsea.jpg"], (3, *img.shape[:2]), 0, max_bytes=MAX_INPUT_BYTES)
    np.testing.assert_array_equal(got[0], img.transpose(2, 0, 1))


def test_resize_0_needs_the_exact_size(photos):
    with pytest.raises(InputError, match="a 451x300 image; the model takes 32x24 images and "
                       "its preprocessing does not resize") as e:
        read_image(photos["chelsea.png"], (3, 24, 32), 0, max_bytes=MAX_INPUT_BYTES)
    one_line(e, photos["chelsea.png"])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1", "CMYK"])
def test_image_modes_become_the_models_channels(tmp_path, mode):
    rgb = Image.fromarray(data.chelsea()[:40, :50])
    img = rgb.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    path = save(img, tmp_path / f"m.{fmt.lower()}", format=fmt)
    decoded = Image.open(path)
    for c, target in ((3, "RGB"), (1, "L")):
        got = read_image(path, (c, 40, 50), 0, max_bytes=MAX_INPUT_BYTES)[0]
        np.testing.assert_array_equal(got, chw(decoded.convert(target)), err_msg=(mode, c))
    if mode == "L":  # grey into an RGB model: three equal channels
        got = read_image(path, (3, 40, 50), 0, max_bytes=MAX_INPUT_BYTES)[0]
        assert (got[0] == got[1]).all() and (got[1] == got[2]).all()


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    wide = (np.arange(20 * 30, dtype=np.uint32).reshape(20, 30) * 109).astype(np.uint16)
    path = save(Image.fromarray(wide), tmp_path / "16.png")
    got = read_image(path, (1, 20, 30), 0, max_bytes=MAX_INPUT_BYTES)[0, 0]
    np.testing.assert_array_equal(got, np.round(wide / 257).astype(np.uint8))
    assert got.max() > 250  # Pillow's convert("L") would leave 255 from 256 on


@pytest.mark.parametrize("fmt, ext", [("GIF", "gif"), ("BMP", "bmp"), ("PPM", "ppm"),
                                      ("WEBP", "webp")])
def test_other_formats(tmp_path, fmt, ext):
    a = data.chelsea()[:30, :40]
    img = Image.fromarray(a).convert("L") if ext == "pgm" else Image.fromarray(a)
    path = save(img, tmp_path / f"x.{ext}", format=fmt, **({"lossless": True} if
                                                           fmt == "WEBP" else {}))
    got = read_image(path, (3, 30, 40), 0, max_bytes=MAX_INPUT_BYTES)[0]
    np.testing.assert_array_equal(got, chw(Image.open(path).convert("RGB")))


def test_pgm_for_the_grey_demo(tmp_path):
    a = data.camera()[100:128, 200:228]
    path = save(Image.fromarray(a), tmp_path / "digit.pgm")
    np.testing.assert_array_equal(read_image(path, (1, 28, 28), 0, max_bytes=2**20)[0, 0], a)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    a = data.astronaut()[::8, ::4]  # 64 x 128: not square, so a rotation shows in the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(Image.fromarray(a), tmp_path / f"rot.{fmt.lower()}", format=fmt, exif=exif,
                **({"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}))
    got = read_image(path, (3, 128, 64), 0, max_bytes=MAX_INPUT_BYTES)[0]
    upright = np.rot90(np.asarray(Image.open(path).convert("RGB")), -1)  # clockwise
    np.testing.assert_array_equal(got, upright.transpose(2, 0, 1))
    with pytest.raises(InputError, match="a 64x128 image"):  # upright: 64 wide, not sideways
        read_image(path, (3, 64, 128), 0, max_bytes=MAX_INPUT_BYTES)


# ---- hostile image files: one line naming the file, fast ------------------------------------

def png_header(width, height, color_type=2, payload=b""):
    """A PNG whose IHDR claims width x height, with `payload` as its only IDAT."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", payload)
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("width, height, match", [
    (100_000, 100_000, r"exceeds limit of .* pixels.*decompression bomb"),  # Pillow's own
    (9000, 9000, r"a 9000x9000 image needs 324,000,000 bytes decoded, over the limit of "
                 r"268,435,456 bytes \(max_bytes\)"),                        # ours, lower
])
def test_decompression_bomb_headers_are_refused_before_decoding(tmp_path, width, height, match):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(width, height, payload=zlib.compress(bytes(1 << 20), 9)))
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=match) as e:
        read_image(path, (3, 224, 224), 256, max_bytes=MAX_INPUT_BYTES)
    assert time.perf_counter() - t0 < 1.0
    one_line(e, path)


def test_a_real_image_over_a_lowered_limit(photos):
    with pytest.raises(InputError, match=r"a 512x512 image needs 1,048,576 bytes decoded, "
                       r"over the limit of 1,000,000 bytes"):
        read_image(photos["astronaut.png"], (3, 224, 224), 256, max_bytes=1_000_000)
    with pytest.raises(InputError, match=r"an image file of [\d,]+ bytes, over the limit of "
                       r"100,000 bytes"):
        read_image(photos["astronaut.png"], (3, 224, 224), 256, max_bytes=100_000)


@pytest.mark.parametrize("name, content, match", [
    ("cut.jpg", lambda b: b[: len(b) // 2], r"cannot decode the JPEG image: image file is "
                                            r"truncated"),
    ("cut.png", lambda b: b[: len(b) // 2], r"cannot decode the PNG image"),
    ("text.jpg", lambda b: b"just some text, not a picture\n" * 10,
     r"not a JPEG, PNG, BMP, GIF, WebP or PGM/PPM image$"),
    ("array.jpg", lambda b: b"\x93NUMPY\x01\x00v\x00{'descr': '|u1'" + b" " * 100,
     r"not a JPEG, PNG, BMP, GIF, WebP or PGM/PPM image \(it looks like a \.npy array\)"),
    ("bad-crc.png", lambda b: b[:40] + bytes([b[40] ^ 0xFF]) + b[41:],
     r"bad-crc\.png: a damaged PNG image: its header cannot be read"),
    ("bad.gif", lambda b: b"GIF89a\xff\xff\xff\xff", "a damaged GIF image"),
    ("empty.png", lambda b: b"", "not a JPEG, PNG"),
    ("header-only.png", lambda b: png_header(10, 10), "cannot decode the PNG image"),
])
def test_damaged_and_fake_images_are_one_line(tmp_path, photos, name, content, match):
    good = open(photos["chelsea.jpg" if name.endswith(".jpg") else "chelsea.png"], "rb").read()
    path = tmp_path / name
    path.write_bytes(content(good))
    with pytest.raises(InputError, match=match) as e:
        read_image(path, (3, 24, 32), 40, max_bytes=MAX_INPUT_BYTES)
    one_line(e, path)


def test_formats_outside_the_list_are_not_tried(tmp_path):
    """TIFF is something Pillow reads; it is not on the list, so its decoder never runs."""
    path = save(Image.fromarray(data.chelsea()), tmp_path / "x.tif", format="TIFF")
    with pytest.raises(InputError, match="not a JPEG, PNG, BMP, GIF, WebP or PGM/PPM image"):
        read_image(path, (3, 24, 32), 40, max_bytes=MAX_INPUT_BYTES)


def test_missing_file_and_missing_pillow(tmp_path, monkeypatch, photos):
    with pytest.raises(InputError, match="nope.jpg: no such file"):
        read_image(tmp_path / "nope.jpg", (3, 24, 32), 40, max_bytes=MAX_INPUT_BYTES)
    monkeypatch.setitem(sys.modules, "PIL", None)  # import PIL now raises ImportError
    with pytest.raises(InputError) as e:
        read_image(photos["chelsea.jpg"], (3, 24, 32), 40, max_bytes=MAX_INPUT_BYTES)
    assert str(e.value) == (f"reading {photos['chelsea.jpg']} needs Pillow: "
                            f"pip install 'pocketnn[images]'")


def test_a_model_of_other_channel_counts_needs_arrays(photos):
    with pytest.raises(InputError, match="the model takes 4-channel input; an image gives 1"):
        read_image(photos["chelsea.png"], (4, 24, 32), 40, max_bytes=MAX_INPUT_BYTES)


# ---- the Python API ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rgb_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "rgb.pnn")


def reference_input(path, model):
    """The model input computed here: pixels (as above) / 255, then ImageNet mean and std."""
    pixels = expected(path, model.input_shape, model.graph.preprocess.resize)
    x = pixels.astype(np.float64) / 255
    return ((x - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None])[None]


def test_preprocess_paths_pil_images_and_arrays(rgb_model, photos):
    want = np.concatenate([reference_input(photos[n], rgb_model)
                           for n in ("astronaut.png", "chelsea.png")])
    got = preprocess(rgb_model, [photos["astronaut.png"], photos["chelsea.png"]])
    assert got.dtype == np.float32 and got.shape == (2, 3, 24, 32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    pil = preprocess(rgb_model, Image.open(photos["chelsea.png"]))
    np.testing.assert_array_equal(pil, got[1:])
    pixels = expected(photos["chelsea.png"], rgb_model.input_shape, 40)  # (C, H, W) uint8
    for layout in (pixels, pixels.transpose(1, 2, 0), pixels[None],
                   pixels.transpose(1, 2, 0)[None]):  # CHW, HWC, NCHW, NHWC
        np.testing.assert_array_equal(preprocess(rgb_model, layout), got[1:])


def test_predict_returns_named_top_k(rgb_model, photos):
    paths = [photos["astronaut.png"], photos["chelsea.jpg"]]
    results = predict(rgb_model, paths, top=3)
    assert len(results) == 2 and all(len(r) == 3 for r in results)
    logits = rgb_model.run(preprocess(rgb_model, paths)).astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for r, p in zip(results, probs, strict=True):
        assert all(isinstance(t, Top) for t in r)
        assert [t.index for t in r] == list(np.argsort(-p)[:3])
        assert [t.label for t in r] == [LABELS[t.index] for t in r]
        np.testing.assert_allclose([t.prob for t in r], np.sort(p)[::-1][:3], rtol=1e-6)
        label, prob, index = r[0]  # a NamedTuple: unpacks
        assert prob == max(p.tolist(), key=float) or np.isclose(prob, p.max())
    assert len(predict(rgb_model, paths[0], top=None)[0]) == 4  # all classes
    assert len(predict(rgb_model, paths[0], top=99)[0]) == 4    # capped
    with pytest.raises(ValueError, match="top must be a positive integer"):
        predict(rgb_model, paths[0], top=0)


def test_a_graph_ending_in_softmax_is_not_softmaxed_again(tmp_path, photos):
    m = tiny_model(tmp_path / "soft.pnn", softmax=True)
    assert ends_in_softmax(m.graph)
    probs = m.run(preprocess(m, photos["chelsea.png"]))[0]
    tops = predict(m, photos["chelsea.png"], top=None)[0]
    np.testing.assert_allclose([t.prob for t in tops], np.sort(probs)[::-1], rtol=1e-6)


def test_the_engine_namespace(rgb_model, photos):
    assert engine.predict is predict and engine.preprocess is preprocess
    assert engine.FormatError is formats.FormatError
    assert issubclass(engine.InputError, engine.EngineError)
    assert issubclass(engine.ModelError, engine.EngineError)
    assert rgb_model.labels == LABELS
    demo = engine.load(engine.DEMO_MODEL)
    with np.load(engine.DEMO_SAMPLES) as f:
        x, y = f["x"][:20], f["y"][:20]
    top1 = [r[0].index for r in engine.predict(demo, x, top=1)]
    assert np.mean(np.array(top1) == y) >= 0.8


def test_a_model_file_as_an_input_says_so(rgb_model, tmp_path):
    with pytest.raises(InputError, match=r"demo.pnn: a model, not an input: pass it with -m"):
        (tmp_path / "demo.pnn").write_bytes(open(engine.DEMO_MODEL, "rb").read())
        predict(rgb_model, str(tmp_path / "demo.pnn"))


def test_float_pixels_in_0_1_are_refused_unless_said(rgb_model, photos):
    pixels = expected(photos["chelsea.png"], rgb_model.input_shape, 40)
    want = preprocess(rgb_model, pixels)
    floats = pixels.astype(np.float32) / 255
    with pytest.raises(InputError, match=r"input: values in 0\.03529\.\.0\.8039 look like 0\.\.1 "
                       r"pixels; the model takes raw pixels in 0\.\.255 .* --input-range 0\.\.1 "
                       r"\(input_range=\(0, 1\) in Python\)"):
        preprocess(rgb_model, floats)
    np.testing.assert_allclose(preprocess(rgb_model, floats, input_range=(0, 1)), want,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(preprocess(rgb_model, floats * 2 - 1, input_range=(-1, 1)),
                               want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(preprocess(rgb_model, pixels.astype(np.float32)), want)
    # image files are 8-bit pixels whatever input_range says about arrays
    np.testing.assert_array_equal(
        preprocess(rgb_model, photos["chelsea.png"], input_range=(0, 1)), want)
