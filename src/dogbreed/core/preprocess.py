"""Image decoding and the evaluation transform, in Pillow + numpy only.

Training evaluates with this code and the server predicts with it, so both see the
same tensor. It reproduces torchvision's Resize(256) -> CenterCrop(224) ->
ToTensor -> Normalize(ImageNet) exactly (tests compare the two), without torch.
"""

from __future__ import annotations

import contextlib
import io
import math
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.JpegImagePlugin import JpegImageFile

from dogbreed.core.errors import ImageError, ImageTooLargeError
from dogbreed.core.imagecheck import check_pixels, inspect_image
from dogbreed.core.settings import DEFAULT_MAX_PIXELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


# Pillow's own guard is the last line behind ours: it refuses at twice its limit and warns
# above it. Set to our limit while we decode (and put back after), its warning is an error.
_BOMB_LIMIT_LOCK = threading.Lock()
# Rows converted at a time: an image's full-size copies (RGBA, canvas, composite, float)
# would each cost as much as the decoded image.
_STRIP_PIXELS = 1_000_000
_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


@contextlib.contextmanager
def _pillow_bomb_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's module-wide limit at ours for the duration. Put back only while it is
    still ours, so that overlapping decodes (threads) end with the value found first."""
    with _BOMB_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        with _BOMB_LIMIT_LOCK:
            if max_pixels == Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = saved


@contextlib.contextmanager
def _decoding(max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[None]:
    """Pillow's failures as ours: ImageError for what is not an image, 413 for bombs."""
    try:
        with warnings.catch_warnings(), _pillow_bomb_limit(max_pixels):
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image over the pixel limit: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageError("cannot decode image: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc


def _read(source: bytes | str | Path) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {source}: {exc}") from exc


def open_image(
    source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, short_side: int | None = None
) -> Image.Image:
    """Decode an image to 8-bit RGB, upright as its EXIF orientation says.

    Only JPEG, PNG and WebP are decoded, and only after `inspect_image` has read
    from their bytes what decoding them will cost (see core/imagecheck.py).

    With `short_side`, a large image is decoded or reduced at the smallest of the
    scales 1/2, 1/4, 1/8 that keeps its short side at least that long: a JPEG by
    libjpeg's DCT scaling (a 12-megapixel phone photo, 4032x3024, becomes 504x378
    for a 256-pixel resize, a 64th of the pixels to decode), a PNG or WebP by a box
    reduction, strip by strip, so that no full-size copy is made. The resize that
    follows is still antialiased from at least `short_side`, so answers barely
    change (see the README's figures).

    Raises ImageError for anything that is not an accepted, decodable image and
    ImageTooLargeError above max_pixels or a decode-cost limit (checked before decoding).
    """
    data = _read(source)
    info = inspect_image(data, max_pixels)
    with _decoding(max_pixels):
        img = Image.open(io.BytesIO(data), formats=info.pillow_formats)
        check_pixels(img.width, img.height, max_pixels)  # Pillow read the same header
        if isinstance(img, JpegImageFile):
            if short_side:
                img.draft(img.mode, draft_size(img.width, img.height, short_side))
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
        img.load()
        factor = reduce_factor(img.width, img.height, short_side) if short_side else 1
        return _upright(to_rgb_reduced(img, factor), img.getexif().get(_ORIENTATION, 1))


def draft_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The size to ask libjpeg for: the short side at `short_side`, aspect kept (it then
    picks the smallest DCT scale at least this large)."""
    scale = short_side / min(width, height)
    if scale >= 1:
        return width, height
    return math.ceil(width * scale), math.ceil(height * scale)


def reduce_factor(width: int, height: int, short_side: int) -> int:
    """The largest of 8, 4, 2 that keeps the short side (rounded up, as libjpeg and
    Pillow's reduce round) at least `short_side`; else 1."""
    for factor in (8, 4, 2):
        if -(-min(width, height) // factor) >= short_side:
            return factor
    return 1


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image's header alone (nothing decoded); refuses, as
    decoding would, a format we do not take or a file over a decode-cost limit."""
    info = inspect_image(data, max_pixels=sys.maxsize)
    return info.width, info.height


def _upright(img: Image.Image, orientation: object) -> Image.Image:
    for method in _TRANSPOSE.get(orientation, ()):  # type: ignore[call-overload]
        img = img.transpose(method)
    return img


def to_rgb_reduced(img: Image.Image, factor: int = 1) -> Image.Image:
    """`to_rgb`, then a `factor` box reduction, a strip of rows at a time: a large RGBA
    or 16-bit image is never copied whole (the result is the only other full buffer)."""
    if img.mode == "RGB" and factor == 1:
        return img
    top = _sixteen_bit_top(img)
    rows = max(factor, _STRIP_PIXELS // max(1, img.width) // factor * factor)
    out = Image.new("RGB", (-(-img.width // factor), -(-img.height // factor)))
    for y in range(0, img.height, rows):
        strip = to_rgb(img.crop((0, y, img.width, min(img.height, y + rows))), top)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, y // factor))
    return out


def _sixteen_bit_top(img: Image.Image) -> float | None:
    if img.mode not in _SIXTEEN_BIT and img.mode != "F":
        return None
    return float(img.getextrema()[1]) if img.width and img.height else 0.0  # type: ignore[index]


def to_rgb(img: Image.Image, top: float | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white).

    `top`: for 16-bit and float images, the largest value of the whole image when
    `img` is a strip of it (the 8-bit range is taken from it)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode == "F":
        arr = np.array(img, dtype=np.float32)  # a copy; float64 would double a big image's memory
        if top is None:
            top = float(arr.max()) if arr.size else 0.0
        if top > 255:  # 16-bit data: keep the top 8 bits of the range actually used
            arr *= np.float32(255.0 / (65535.0 if top > 4095 else top))
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, img)
    return img.convert("RGB")


def resized_size(width: int, height: int, short: int = RESIZE) -> tuple[int, int]:
    """(width, height) with the short side at `short`, as torchvision's Resize(int)."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def center_crop_box(width: int, height: int, crop: int = CROP) -> tuple[int, int, int, int]:
    """Pillow crop box (left, top, right, bottom), rounding as torchvision does."""
    left = round((width - crop) / 2.0)
    top = round((height - crop) / 2.0)
    return left, top, left + crop, top + crop


def normalize(rgb: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float32 3xHxW, scaled to [0, 1] and ImageNet-normalised."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1)).astype(np.float32)
    chw /= np.float32(255.0)
    chw -= _MEAN
    chw /= _STD
    return chw


def eval_input(source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode and transform for evaluation and serving: (3, CROP, CROP) float32. Training's
    validation, the int8 calibration, `predict` and the endpoint all come through here."""
    return eval_array(open_image(source, max_pixels, short_side=RESIZE))


def eval_array(img: Image.Image, resize: int = RESIZE, crop: int = CROP) -> np.ndarray:
    """The evaluation transform: float32 array of shape (3, crop, crop)."""
    w, h = resized_size(img.width, img.height, resize)
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    img = img.crop(center_crop_box(w, h, crop))
    return normalize(np.asarray(img, dtype=np.uint8))
