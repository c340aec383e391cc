"""Batched crop + resize (train/resample.py) against torch's own per-image antialiased resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from dogbreed.train.device_data import resize
from dogbreed.train.resample import axis_weights, crop_resize, scale_boxes

# On the 0-255 scale; measured worst 7.6e-05 (float32 rounding, different summation order).
TOLERANCE = 1e-3
EXAMPLES = settings(max_examples=30, deadline=None)


def reference(image: torch.Tensor, box: tuple[int, int, int, int], out: int) -> torch.Tensor:
    """(3, H, W) -> (3, out, out): the crop cut out, then resized one image at a time, as
    augment does."""
    top, left, h, w = box
    return resize(image[:, top : top + h, left : left + w], out, out)


def noise(height: int, width: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=gen, dtype=torch.uint8)


def gradient(height: int, width: int) -> torch.Tensor:
    """(3, H, W) float: smooth ramps, on which resampling the same area twice agrees closely."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack([xx * 255 / width, yy * 255 / height, (xx + yy) * 127 / (width + height)])
    return torch.from_numpy(arr)


@pytest.mark.parametrize(
    ("height", "width", "box", "out"),
    [
        (256, 256, (0, 0, 256, 256), 224),  # the full image, small downscale
        (1024, 1024, (0, 0, 1024, 1024), 224),  # large downscale (4.6x)
        (256, 256, (100, 90, 20, 25), 224),  # upscale ~10x
        (300, 300, (5, 7, 1, 1), 224),  # one pixel
        (300, 300, (0, 150, 300, 1), 224),  # a one-pixel-wide column
        (300, 300, (299, 0, 1, 300), 224),  # a one-pixel-high row on the bottom edge
        (40, 900, (0, 0, 40, 900), 224),  # non-square sources
        (1000, 30, (3, 0, 997, 30), 224),
        (256, 320, (0, 0, 13, 320), 224),  # touching top, left and right
        (256, 320, (243, 301, 13, 19), 224),  # touching bottom and right
        (500, 500, (13, 77, 411, 13), 224),  # downscale one way, upscale the other
        (64, 64, (0, 0, 64, 64), 7),  # tiny output
        (97, 131, (11, 3, 53, 128), 224),  # odd sizes
    ],
)
def test_integer_boxes_match_interpolate(height, width, box, out):
    image = noise(height, width)
    got = crop_resize(image.unsqueeze(0), torch.tensor([box]), out)[0]
    assert got.shape == (3, out, out) and got.dtype == torch.float32
    assert (got - reference(image, box, out)).abs().max().item() < TOLERANCE


@st.composite
def image_and_box(draw):
    height = draw(st.integers(1, 160))
    width = draw(st.integers(1, 160))
    h = draw(st.integers(1, height))
    w = draw(st.integers(1, width))
    top = draw(st.integers(0, height - h))
    left = draw(st.integers(0, width - w))
    out = draw(st.integers(1, 80))
    return height, width, (top, left, h, w), out


@EXAMPLES
@given(image_and_box(), st.integers(0, 2**16))
def test_any_integer_box_matches_interpolate(case, seed):
    height, width, box, out = case
    image = noise(height, width, seed)
    got = crop_resize(image.unsqueeze(0), torch.tensor([box]), out)[0]
    assert (got - reference(image, box, out)).abs().max().item() < TOLERANCE


@st.composite
def float_boxes(draw):
    """(size, out, starts, lengths) for a few fractional boxes inside a `size`-pixel axis."""
    size = draw(st.integers(1, 300))
    out = draw(st.integers(1, 64))
    pairs = draw(
        st.lists(
            st.tuples(st.floats(0, 1), st.floats(0.01, 1)),
            min_size=1,
            max_size=4,
        )
    )
    starts, lengths = [], []
    for start_frac, length_frac in pairs:
        start = start_frac * size * 0.99
        starts.append(start)
        lengths.append(max(length_frac * (size - start), 1e-3))
    return size, out, torch.tensor(starts), torch.tensor(lengths)


@EXAMPLES
@given(float_boxes())
def test_weights_rows_sum_to_one_and_stay_in_the_box(case):
    size, out, starts, lengths = case
    weights = axis_weights(starts, lengths, size, out)
    assert weights.shape == (len(starts), out, size)
    assert torch.allclose(weights.sum(-1), torch.ones(len(starts), out), atol=1e-5)
    assert (weights >= 0).all()
    pixel = torch.arange(size, dtype=torch.float32)
    outside = (pixel < starts.floor()[:, None]) | (pixel >= (starts + lengths).ceil()[:, None])
    assert (weights * outside[:, None, :]).abs().max().item() == 0.0


def test_batch_equals_each_image_alone():
    images = torch.stack([noise(120, 120, seed) for seed in range(5)])
    boxes = torch.tensor(
        [
            (0, 0, 120, 120),
            (10, 20, 30, 40),
            (60.5, 3.25, 50.0, 70.75),
            (119, 0, 1, 120),
            (7, 9, 3, 100),
        ]
    )
    batch = crop_resize(images, boxes, 56)
    for k in range(len(images)):
        alone = crop_resize(images[k : k + 1], boxes[k : k + 1], 56)[0]
        assert torch.allclose(batch[k], alone, atol=1e-4)


def test_uint8_and_float_inputs_agree():
    images = torch.stack([noise(90, 70, seed) for seed in range(3)])
    boxes = torch.tensor([(0, 0, 90, 70), (5.5, 2.0, 40.0, 33.3), (80, 60, 10, 10)])
    from_uint8 = crop_resize(images, boxes, 32)
    from_float = crop_resize(images.float(), boxes, 32)
    assert from_uint8.dtype == torch.float32
    assert torch.equal(from_uint8, from_float)
    assert from_uint8.min() >= 0 and from_uint8.max() <= 255 + 1e-3


def test_scale_boxes_full_image_maps_to_the_grid():
    boxes = torch.tensor([(0, 0, 375, 500), (0, 0, 40, 900)])
    scaled = scale_boxes(boxes, [(375, 500), (40, 900)], (256, 256))
    assert torch.equal(scaled, torch.tensor([(0.0, 0.0, 256.0, 256.0)] * 2))


@EXAMPLES
@given(image_and_box(), st.integers(16, 512))
def test_scale_boxes_scales_each_axis(case, side):
    height, width, box, _ = case
    (top, left, h, w) = scale_boxes(torch.tensor([box]), [(height, width)], (side, side))[
        0
    ].tolist()
    assert top == pytest.approx(box[0] * side / height, rel=1e-5)
    assert left == pytest.approx(box[1] * side / width, rel=1e-5)
    assert h == pytest.approx(box[2] * side / height, rel=1e-5)
    assert w == pytest.approx(box[3] * side / width, rel=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "box"),
    [
        (375, 500, (40, 60, 300, 400)),
        (375, 500, (0, 0, 375, 500)),
        (600, 200, (100, 10, 150, 180)),
        (300, 900, (17, 333, 120, 90)),  # a box smaller than the cache: upscaled after squashing
    ],
)
def test_cached_crop_is_close_to_the_original_crop(height, width, box):
    side = 256
    image = gradient(height, width)
    cached = F.interpolate(
        image.unsqueeze(0), size=(side, side), mode="bilinear", antialias=True, align_corners=False
    )
    scaled = scale_boxes(torch.tensor([box]), [(height, width)], (side, side))
    got = crop_resize(cached, scaled, 224)[0]
    diff = (got - reference(image, box, 224)).abs()
    # A squash then a crop is not a crop, but on ramps they agree: measured mean <= 0.04,
    # max <= 0.21 levels; the bound leaves room for other smooth images.
    assert diff.mean().item() < 0.5
    assert diff.max().item() < 2.0


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="boxes"):
        crop_resize(torch.zeros(2, 3, 8, 8), torch.zeros(3, 4))


def test_flips_mirror_exactly_those_outputs():
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=g)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [0.0, 0.0, 40.0, 40.0], [5.5, 1.25, 9.0, 33.0]])
    plain = crop_resize(images, boxes, out=16)
    flipped = crop_resize(images, boxes, out=16, flips=torch.tensor([True, False, True]))
    torch.testing.assert_close(flipped[0], plain[0].flip(-1), atol=1e-4, rtol=0)
    torch.testing.assert_close(flipped[1], plain[1], atol=0, rtol=0)
    torch.testing.assert_close(flipped[2], plain[2].flip(-1), atol=1e-4, rtol=0)
