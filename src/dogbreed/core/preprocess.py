"""Image decoding and the evaluation transform, in Pillow + numpy only.

Training evaluates with this code and the server predicts with it, so both see the
same tensor. It reproduces torchvision's Resize(256) -> CenterCrop(224) ->
ToTensor -> Normalize(ImageNet) exactly (tests compare the two), without torch.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dogbreed.core.errors import ImageError, ImageTooLargeError
from dogbreed.core.settings import DEFAULT_MAX_PIXELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE = 256
CROP = 224

_MEAN = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
_STD = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
_SIXTEEN_BIT = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


@contextlib.contextmanager
def _decoding() -> Iterator[None]:
    """Pillow's failures as ours: ImageError for what is not an image, 413 for bombs."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit replaces Pillow's bomb warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image over the pixel limit: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageError("cannot decode image: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot decode image: {exc}") from exc


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} pixels, over the limit of {max_pixels}"
        )


def open_image(
    source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, short_side: int | None = None
) -> Image.Image:
    """Decode an image to 8-bit RGB, upright as its EXIF orientation says.

    With `short_side`, a JPEG is decoded at the smallest of libjpeg's DCT scales
    (1/2, 1/4, 1/8) that keeps its short side at least that long: a 12-megapixel
    phone photo (4032x3024) becomes 504x378 for a 256-pixel resize, a 64th of
    the pixels to decode. The resize that follows is still antialiased from at least
    `short_side`, so answers barely change (see the README's figures).

    Raises ImageError for anything that is not a decodable image and
    ImageTooLargeError above max_pixels (checked from the header, before decoding).
    """
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty image: the request body has no bytes")
        fp = io.BytesIO(source)
    else:
        fp = source
    with _decoding():
        img = Image.open(fp)
        check_pixels(img.width, img.height, max_pixels)
        if short_side and img.format == "JPEG":
            img.draft(img.mode, draft_size(img.width, img.height, short_side))
        img.load()
        img = ImageOps.exif_transpose(img)
    return to_rgb(img)


def draft_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """The size to ask libjpeg for: the short side at `short_side`, aspect kept (it then
    picks the smallest DCT scale at least this large)."""
    scale = short_side / min(width, height)
    if scale >= 1:
        return width, height
    return math.ceil(width * scale), math.ceil(height * scale)


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image's header alone (nothing decoded)."""
    if not data:
        raise ImageError("empty image: the request body has no bytes")
    with _decoding(), Image.open(io.BytesIO(data)) as img:
        return img.width, img.height


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode == "F":
        arr = np.array(img, dtype=np.float32)  # a copy; float64 would double a big image's memory
        top = arr.max() if arr.size else 0.0
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
