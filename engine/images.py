"""Image files in: decoded with Pillow, oriented, converted, resized and centre-cropped the way
torchvision's ImageNet evaluation does (`Resize(resize)`, `CenterCrop((H, W))` on a PIL image).

Pillow is optional (`pip install 'pocketnn[images]'`) and imported only when an image is read.
Formats read: JPEG, PNG, BMP, GIF (the first frame), WebP and netpbm (PGM, PPM, PBM). Pillow's
other decoders (TIFF, ICO, PSD, EPS through Ghostscript, ...) are never tried: `Image.open` is
given this list. An image file is as hostile as any input (docs/SECURITY.md, section 5):

- the file may be at most `max_bytes` (256 MiB by default) long;
- width x height x 4 bytes (what Pillow holds per RGB pixel) must be at most `max_bytes`,
  checked from the header before any pixel is decoded (Pillow's own decompression-bomb limit,
  2 x 89.5 M pixels, stands behind it); decoding and converting then peak at about twice that;
- a truncated or damaged file, and whatever Pillow raises on one, is one InputError naming
  the file.

Then, in this order (`fit`):

1. EXIF orientation applied (`ImageOps.exif_transpose`): a phone photo comes out upright.
   torchvision's `ImageFolder` loader does not do this; for an image without an orientation
   tag the two agree.
2. converted to RGB (a 3-channel model) or L (1 channel: ITU-R 601-2 luma, Pillow's
   `convert("L")`); alpha is dropped, not composited, as `convert("RGB")` does. 16-bit grey is
   scaled to 8 bits (Pillow's `convert` would clip it at 255).
3. resized so its shorter side is `resize` pixels and the longer `int(resize * long / short)`
   (torchvision's rounding), with Pillow's BILINEAR filter, which widens its support when
   downscaling: antialiased, as torchvision resizes PIL images (and tensors with
   `antialias=True`, its default).
4. centre-cropped to the model's (H, W): the first row kept is `int(round((h - H) / 2))` and the
   first column `int(round((w - W) / 2))` (torchvision's `CenterCrop`), padded with zeros first
   where the image is smaller than the crop.

With `resize` 0 (the model's preprocessing does not resize) the image must already be H x W.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from engine.errors import InputError
from engine.inputs import IMAGE_KINDS, _reason, describe_kind, sniff

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "PPM")  # Pillow's names; PPM reads PGM/PBM too
FORMAT_NAMES = "JPEG, PNG, BMP, GIF, WebP or PGM/PPM"
EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif",
                        ".webp", ".pgm", ".ppm", ".pbm", ".pnm"})
BYTES_PER_PIXEL = 4      # Pillow keeps RGB (and RGBA, CMYK, 32-bit) pixels in 4 bytes
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # grey 0..65535 (PNG, 16-bit PGM)


def is_image_name(path: str | os.PathLike) -> bool:
    """Whether a file name says image (the content decides too: inputs.sniff)."""
    return os.path.splitext(os.fspath(path))[1].lower() in EXTENSIONS


def pillow(source: str):
    """Pillow's Image and ImageOps modules, or an InputError saying how to install it."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise InputError(f"reading {source} needs Pillow: pip install 'pocketnn[images]'"
                         ) from None
    return Image, ImageOps


def is_pil_image(x) -> bool:
    """A PIL image, recognised without importing Pillow."""
    return any(c.__module__.startswith("PIL.") and c.__name__ == "Image"
               for c in type(x).__mro__)


# ---- geometry: torchvision's rules ----------------------------------------------------------

def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(width, height) after a resize of the shorter side to `short` (torchvision's
    `_compute_resized_output_size`: the longer side is truncated, not rounded)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def crop_start(size: int, crop: int) -> int:
    """The first row (or column) a centre crop of `crop` keeps from `size`; negative when the
    image is smaller and torchvision's `CenterCrop` pads it: (crop - size) // 2 zeros before."""
    if crop > size:
        return -((crop - size) // 2)
    return int(round((size - crop) / 2.0))


# ---- reading -------------------------------------------------------------------------------

def read_image(path: str | os.PathLike, input_shape: tuple[int, ...], resize: int = 0, *,
               max_bytes: int) -> np.ndarray:
    """An image file as uint8 (1, C, H, W) pixels for a model whose input is (C, H, W)."""
    path = os.fspath(path)
    return fit(open_image(path, max_bytes=max_bytes), input_shape, resize, path)[None]


def open_image(path: str, *, max_bytes: int):
    """Decode an image file (size checked from its header first) and apply its EXIF
    orientation. Returns a loaded PIL image."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {_reason(e)}") from None
    with f, warnings.catch_warnings():
        Image, ImageOps = pillow(path)
        # Pillow warns on images over 89.5 M pixels and on some palettes; the limit is ours
        warnings.simplefilter("ignore")
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise InputError(f"{path}: an image file of {size:,} bytes, over the limit of "
                             f"{max_bytes:,} bytes (max_bytes)")
        try:
            img = Image.open(f, formats=list(FORMATS))
        except Image.DecompressionBombError as e:
            raise InputError(f"{path}: {_reason(e)} (a decompression bomb, or an image over "
                             f"Pillow's limit of {2 * Image.MAX_IMAGE_PIXELS:,} pixels)"
                             ) from None
        except Image.UnidentifiedImageError:
            kind = sniff(path)
            if kind in IMAGE_KINDS:  # the signature is right, the header is not
                raise InputError(f"{path}: a damaged {describe_kind(kind)[2:]}: its header "
                                 f"cannot be read") from None
            hint = f" (it looks like {describe_kind(kind)})" if kind else ""
            raise InputError(f"{path}: not a {FORMAT_NAMES} image{hint}") from None
        except MemoryError:
            raise
        except Exception as e:  # what a plugin raises on a damaged header
            raise InputError(f"{path}: cannot read the image header: {_reason(e)}") from None
        width, height = img.size
        need = width * height * BYTES_PER_PIXEL
        if need > max_bytes:
            raise InputError(f"{path}: a {width}x{height} image needs {need:,} bytes decoded, "
                             f"over the limit of {max_bytes:,} bytes (max_bytes)")
        try:
            img.load()
            return _upright(img, ImageOps)
        except MemoryError:
            raise
        except Exception as e:  # truncated data, broken streams, bad EXIF: the decoder's word
            raise InputError(f"{path}: cannot decode the {img.format} image: {_reason(e)}"
                             ) from None


def _upright(img, ImageOps):
    """The image as it is meant to be shown (EXIF orientation 2..8 applied); no copy when it
    has no orientation tag."""
    orientation = img.getexif().get(0x0112, 1)  # 0x0112: Orientation
    return ImageOps.exif_transpose(img) if orientation not in (1, None) else img


def fit(img, input_shape: tuple[int, ...], resize: int, source: str) -> np.ndarray:
    """A decoded PIL image -> uint8 (C, H, W): converted to L or RGB, resized so its shorter
    side is `resize` (0: it must already be H x W) and centre-cropped to (H, W)."""
    Image, _ = pillow(source)
    c, h, w = input_shape
    if c not in (1, 3):
        raise InputError(f"{source}: the model takes {c}-channel input; an image gives 1 (grey) "
                         f"or 3 (RGB) channels: pass a {c}-channel array instead")
    try:
        img = _convert(img, "L" if c == 1 else "RGB", source, Image)
        width, height = img.size
        if resize:
            size = resized_size(width, height, resize)
            if size != (width, height):
                img = img.resize(size, Image.Resampling.BILINEAR)
                width, height = size
            left, top = crop_start(width, w), crop_start(height, h)
            if (left, top, width, height) != (0, 0, w, h):
                img = img.crop((left, top, left + w, top + h))  # outside the image: zeros
        elif (width, height) != (w, h):
            raise InputError(f"{source}: a {width}x{height} image; the model takes {w}x{h} "
                             f"images and its preprocessing does not resize: resize the image "
                             f"to {w}x{h} first")
        pixels = np.asarray(img, dtype=np.uint8)
    except (InputError, MemoryError):
        raise
    except Exception as e:  # Pillow on a decoded image it cannot convert
        raise InputError(f"{source}: cannot convert the image: {_reason(e)}") from None
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    return np.ascontiguousarray(pixels)


def _convert(img, mode: str, source: str, Image):
    """img in `mode` ("L" or "RGB"); 16-bit grey scaled (not clipped) to 8 bits."""
    if img.mode in _SIXTEEN_BIT:
        wide = np.asarray(img).astype(np.uint32)
        img = Image.fromarray(((np.clip(wide, 0, 65535) + 128) // 257).astype(np.uint8))
    elif img.mode == "F":
        raise InputError(f"{source}: a floating-point image (Pillow mode F); save it with 8 bits "
                         f"per channel, or pass its pixels as an array")
    return img if img.mode == mode else img.convert(mode)
