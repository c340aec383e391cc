"""The torch-free evaluation transform equals torchvision's, and decoding is robust."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from dogbreed.core.errors import ImageError, ImageTooLargeError
from dogbreed.core.preprocess import IMAGENET_MEAN, IMAGENET_STD, eval_array, open_image

TORCHVISION_EVAL = transforms.Compose(
    [
        transforms.Resize(256),
        transforms.CenterCrop(224),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
)


def encode(img: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise_image(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize(
    "size", [(500, 375), (375, 500), (257, 999), (224, 224), (301, 203), (1024, 683), (97, 45)]
)
def test_eval_array_equals_torchvision(size):
    img = noise_image(*size)
    ours = eval_array(img)
    theirs = TORCHVISION_EVAL(img).numpy()
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["bullmastiff", "dalmatian"])
def test_real_photo_matches_torchvision(photos, name):
    img = open_image(photos[name].read_bytes())
    np.testing.assert_allclose(eval_array(img), TORCHVISION_EVAL(img).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "mode,fmt",
    [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("LA", "PNG"), ("RGB", "WEBP")],
)
def test_modes_become_rgb(mode, fmt):
    img = open_image(encode(noise_image(64, 48, mode), fmt))
    assert img.mode == "RGB" and img.size == (64, 48)


def test_sixteen_bit_keeps_its_range():
    arr = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    img = open_image(encode(Image.fromarray(arr), "PNG"))
    rgb = np.asarray(img)
    assert rgb.min() == 0 and rgb.max() == 255  # not clipped to white
    assert len(np.unique(rgb[..., 0])) > 200


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(open_image(encode(rgba, "PNG")))[0, 0].tolist() == [255, 255, 255]


def test_exif_orientation_is_applied():
    img = noise_image(60, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = open_image(encode(img, "JPEG", exif=exif))
    assert decoded.size == (40, 60)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (b"not an image at all", "cannot decode"),
        (encode(noise_image(300, 200))[:2000], "cannot decode"),  # truncated JPEG
    ],
)
def test_bad_bytes_raise_image_error(data, reason):
    with pytest.raises(ImageError, match=reason):
        open_image(data)


def test_pixel_limit_is_checked_before_decoding():
    big = encode(Image.new("L", (5000, 5000)), "PNG")  # compresses to a few kB
    with pytest.raises(ImageTooLargeError, match="5000x5000"):
        open_image(big, max_pixels=10_000_000)
    assert open_image(encode(Image.new("L", (20, 20)), "PNG"), max_pixels=400).size == (20, 20)


def test_large_jpegs_decode_at_a_reduced_scale_that_still_covers_the_resize():
    from dogbreed.core.preprocess import RESIZE, eval_input, open_image

    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).resize((4032, 3024))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    full, reduced = open_image(data), open_image(data, short_side=RESIZE)
    assert full.size == (4032, 3024)
    assert reduced.size == (504, 378)  # libjpeg's 1/8 scale: the short side stays >= 256
    assert min(open_image(data, short_side=1000).size) >= 1000  # 1/2 scale, not 1/4
    diff = np.abs(eval_input(data) - eval_array(full))
    assert float(diff.mean()) < 0.02  # normalised units: a fraction of one 8-bit level on average
