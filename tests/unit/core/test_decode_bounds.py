"""Decoding costs what a legitimate image of its size costs, whatever its header claims.

Every case of the adversarial corpus (tests/support/adversarial.py) is refused
quickly or decoded within the bounds: at most 1 s of CPU per image and 250 MB
above the level before the request, given back afterwards. The JPEG marker parser
is fuzzed: it raises nothing but ImageError, and counts scans as a plain reading does.
"""

from __future__ import annotations

import contextlib
import gc
import io
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dogbreed.core import imagecheck, preprocess
from dogbreed.core.errors import ImageError, ImageTooLargeError
from dogbreed.core.imagecheck import (
    MAX_JPEG_SCANS,
    MAX_JPEG_SEGMENTS,
    inspect_image,
    jpeg_info,
    png_info,
    webp_info,
)
from dogbreed.core.preprocess import eval_input, image_size, open_image
from support import adversarial as adv

CPU_PER_IMAGE_S = 1.0
PEAK_MB = 250
RETAINED_MB = 40
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")

# Cases whose bytes take more than a second to make are left to bench/decode_cost.py.
SLOW_TO_MAKE = {
    "max-jpeg-baseline",
    "max-jpeg-progressive-420",
    "max-png-rgb",
    "max-webp",
    "progressive-444-max",
    "colour-dc-scan-6mb",
    "scans-at-cap",
    "tiff-lzw",
}
FAST_CASES = [name for name in adv.CASES if name not in SLOW_TO_MAKE]


def _mb(field: str) -> float:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise LookupError(field)


def _reset_peak() -> float:
    """Reset the peak resident size (VmHWM) to now; the resident size now, in MB."""
    gc.collect()
    CLEAR_REFS.write_text("5")
    return _mb("VmRSS")


def _outcome(bodies: tuple[bytes, ...]) -> tuple[str, float]:
    """As the endpoint does: every header first, then each image; the largest CPU time
    one image took."""
    worst = 0.0
    try:
        for body in bodies:
            image_size(body)
        for body in bodies:
            start = time.process_time()
            assert eval_input(body).shape == (3, 224, 224)
            worst = max(worst, time.process_time() - start)
    except ImageTooLargeError:
        return adv.TOO_LARGE, worst
    except ImageError:
        return adv.REFUSED, worst
    return adv.DECODED, worst


@pytest.mark.skipif(not CLEAR_REFS.exists(), reason="needs Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("name", FAST_CASES)
def test_corpus_case_is_refused_or_decoded_within_bounds(name):
    bodies = adv.corpus(name)
    base = _reset_peak()
    start = time.process_time()
    outcome, worst = _outcome(bodies)
    total = time.process_time() - start
    peak = _mb("VmHWM") - base
    assert outcome == adv.CASES[name].expect, adv.CASES[name].note
    assert worst <= CPU_PER_IMAGE_S
    if outcome != adv.DECODED:
        assert total <= 0.05 * len(bodies)  # refused from the bytes, before any decoder runs
    assert peak <= PEAK_MB
    gc.collect()
    assert _mb("VmRSS") - base <= RETAINED_MB  # memory comes back after the request


def test_phone_photos_still_decode_upright_and_at_a_reduced_scale():
    (jpeg,) = adv.corpus("phone-12mp-jpeg")
    assert open_image(jpeg, short_side=256).size == (378, 504)  # EXIF rotation 6, 1/8 scale
    (mpo,) = adv.corpus("phone-12mp-mpo")
    assert Image.open(io.BytesIO(mpo)).format == "MPO"  # a JPEG with a second image after it
    assert open_image(mpo, short_side=256).size == (504, 378)  # decoded at 1/8 too


@pytest.mark.parametrize("real_photo", ["bullmastiff", "dalmatian"])
def test_real_photos_pass_the_checks(photos, real_photo):
    data = photos[real_photo].read_bytes()
    info = inspect_image(data, 40_000_000)
    assert info.kind == "JPEG" and (info.width, info.height) == Image.open(photos[real_photo]).size


# ---- JPEG limits -------------------------------------------------------------------------------


def _progressive(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> bytes:
    return adv.encode(adv.photo_like(size, mode), "JPEG", progressive=True)


def test_scan_cap_is_inclusive():
    data = _progressive()
    at_cap = adv.repeat_scan(data, MAX_JPEG_SCANS - adv.scan_count(data))
    assert jpeg_info(at_cap).scans == MAX_JPEG_SCANS
    assert eval_input(at_cap).shape == (3, 224, 224)
    with pytest.raises(ImageError, match=f"over {MAX_JPEG_SCANS} scans"):
        jpeg_info(adv.repeat_scan(at_cap, 1))


def test_segment_cap_counts_every_marker():
    data = adv.encode(Image.new("RGB", (16, 16)), "JPEG")
    jpeg_info(adv.with_segments(data, MAX_JPEG_SEGMENTS // 2))
    with pytest.raises(ImageError, match="segments"):
        jpeg_info(adv.with_segments(data, MAX_JPEG_SEGMENTS))
    with pytest.raises(ImageError, match="segments"):
        jpeg_info(adv.with_restarts_flood(data, MAX_JPEG_SEGMENTS))


def test_progressive_coefficient_memory_is_bounded_from_the_frame_header(monkeypatch):
    frame = imagecheck._Frame(8000, 5000, ((1, 2, 2), (2, 1, 1), (3, 1, 1)))  # 4:2:0
    mcus = 500 * 313  # 16x16 pixels each, the last row padded
    assert imagecheck.coefficient_bytes(frame) == mcus * 6 * 64 * 2  # 6 blocks an MCU
    data = adv.encode(Image.new("RGB", (64, 64)), "JPEG", progressive=True, subsampling=0)
    monkeypatch.setattr(imagecheck, "MAX_COEFFICIENT_BYTES", 64 * 64 * 3 * 2 - 1)
    with pytest.raises(ImageTooLargeError, match="coefficients"):
        jpeg_info(data)
    baseline = adv.encode(Image.new("RGB", (64, 64)), "JPEG", subsampling=0)
    assert jpeg_info(baseline).scans == 1  # one scan: decoded as it streams, nothing held


def test_only_jpeg_png_and_webp_are_accepted():
    for fmt in ("GIF", "BMP", "TIFF", "ICO", "PPM"):
        data = adv.encode(Image.new("RGB", (16, 16)), fmt)
        with pytest.raises(ImageError, match="JPEG, PNG or WebP"):
            open_image(data)
    for fmt in ("JPEG", "PNG", "WEBP"):
        assert open_image(adv.encode(Image.new("RGB", (16, 16)), fmt)).size == (16, 16)


def test_the_content_decides_not_the_name(tmp_path):
    path = tmp_path / "photo.jpg"  # an ICO by its bytes
    path.write_bytes(adv.encode(Image.new("RGB", (16, 16)), "ICO"))
    with pytest.raises(ImageError, match="not a recognised image format"):
        open_image(path)


# ---- Pillow's own bomb guard -------------------------------------------------------------------


def test_pillows_limit_is_ours_while_decoding_and_restored_after(monkeypatch):
    seen = []
    real_open = Image.open

    def spy(*args, **kwargs):
        seen.append(Image.MAX_IMAGE_PIXELS)
        return real_open(*args, **kwargs)

    before = Image.MAX_IMAGE_PIXELS
    monkeypatch.setattr(Image, "open", spy)
    open_image(adv.encode(Image.new("RGB", (20, 20)), "PNG"), max_pixels=12345)
    assert seen == [12345]
    assert before == Image.MAX_IMAGE_PIXELS


def test_pillows_bomb_warning_and_error_become_our_413():
    small = adv.encode(Image.new("RGB", (20, 20)), "PNG")  # 400 pixels
    for limit in (300, 150):  # Pillow warns above its limit, raises above twice it
        with pytest.raises(ImageTooLargeError), preprocess._decoding(limit):
            Image.open(io.BytesIO(small))


def test_bomb_warning_is_not_silenced_outside_decoding():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_image(adv.encode(Image.new("RGB", (20, 20)), "PNG"))
        warnings.warn("after", Image.DecompressionBombWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["after"]


# ---- memory-lean conversion --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "PA", "I;16", "L", "1", "CMYK"])
def test_strip_conversion_equals_whole_image_conversion(monkeypatch, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 60000, (37, 53), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "RGBA")
        img = img.convert(mode)
    if mode == "P":
        img.info["transparency"] = bytes(range(0, 256))
    monkeypatch.setattr(preprocess, "_STRIP_PIXELS", 53 * 5)  # many strips
    for factor in (1, 2, 4):
        whole = preprocess.to_rgb(img)
        expected = whole.reduce(factor) if factor > 1 else whole
        got = preprocess.to_rgb_reduced(img, factor)
        assert got.size == expected.size and got.mode == "RGB"
        assert np.array_equal(np.asarray(got), np.asarray(expected))


def test_a_large_png_is_reduced_like_a_large_jpeg():
    img = adv.photo_like((2400, 1600))
    png = adv.encode(img, "PNG", compress_level=1)
    assert preprocess.reduce_factor(2400, 1600, 256) == 4
    reduced, full = eval_input(png), preprocess.eval_array(open_image(png))
    assert float(np.abs(reduced - full).mean()) < 0.02


# ---- the parsers on arbitrary and real bytes ---------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=400))
def test_jpeg_parser_raises_only_image_error_on_arbitrary_bytes(tail):
    for data in (tail, imagecheck.JPEG_MAGIC + tail):
        try:
            info = jpeg_info(data)
        except ImageError:
            continue
        assert info.scans >= 1 and info.width > 0 and info.height > 0


def _jpeg_seed() -> bytes:
    return _progressive("RGB", (24, 16))


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 255), st.sampled_from("xdi")),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 10_000),
)
def test_jpeg_parser_raises_only_image_error_on_damaged_jpegs(edits, cut):
    data = bytearray(_jpeg_seed())
    for where, byte, how in edits:
        where %= len(data)
        if how == "x":
            data[where] = byte
        elif how == "d":
            del data[where]
        else:
            data.insert(where, byte)
    for candidate in (bytes(data), bytes(data[: cut % len(data)])):
        with contextlib.suppress(ImageError):
            jpeg_info(candidate)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"RIFF\0\0\0\0WEBP", b""]))
def test_inspect_image_raises_only_image_error(tail, magic):
    for parse in (inspect_image, lambda d, _: png_info(d), lambda d, _: webp_info(d)):
        with contextlib.suppress(ImageError):
            parse(magic + tail, 40_000_000)


EXPECTED_PROGRESSIVE_SCANS = {"L": 6, "RGB": 10, "CMYK": 18}  # libjpeg's standard scripts


@settings(max_examples=40, deadline=None)
@given(
    mode=st.sampled_from(["L", "RGB", "CMYK"]),
    size=st.tuples(st.integers(1, 90), st.integers(1, 90)),
    quality=st.integers(5, 100),
    progressive=st.booleans(),
    optimize=st.booleans(),
    subsampling=st.sampled_from([0, 1, 2]),
    restart=st.sampled_from([0, 1, 7]),
    exif=st.booleans(),
)
def test_scan_count_agrees_with_a_plain_reading_of_real_encodings(
    mode, size, quality, progressive, optimize, subsampling, restart, exif
):
    kw = {"quality": quality, "progressive": progressive, "optimize": optimize}
    if mode == "RGB":
        kw["subsampling"] = subsampling
    if restart:
        kw["restart_marker_blocks"] = restart
    if exif:
        kw["exif"] = Image.Exif()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), "uint8"))
    data = adv.encode(img.convert(mode), "JPEG", **kw)
    info = jpeg_info(data)
    assert info.scans == adv.scan_count(data)
    assert info.scans == (EXPECTED_PROGRESSIVE_SCANS[mode] if progressive else 1)
    assert (info.width, info.height) == size
