"""An adversarial image corpus, made at run time with Pillow and numpy plus byte surgery.

Each case is a request body an attacker (or a phone) could send: what it costs to
decode is the question, not its header. The unit tests check that every hostile
case is refused quickly and every legitimate one decodes within the bounds;
bench/decode_cost.py prints the cost of each before and after the checks.

    CASES[name] -> Case(make, expect, note)   make() -> list of image bodies

Nothing here is committed as a binary file: `make()` builds the bytes (a second
or two for the largest) and `corpus()` caches them per process.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

MAX_BYTES = 6 * 1024 * 1024  # InvokeEndpoint's payload cap: the largest request
PHONE = (4032, 3024)  # a 12-megapixel phone photo
MAX_PIXELS = 40_000_000  # the default per-image limit (core/settings.py)
MAX_SIZE = (8000, 5000)  # exactly the limit

# What a case must come to: decoded, refused as not an image we take (400), or too costly (413).
DECODED, REFUSED, TOO_LARGE = "decoded", "refused", "too-large"


@dataclass(frozen=True)
class Case:
    make: Callable[[], list[bytes]]
    expect: str  # DECODED, REFUSED or TOO_LARGE
    note: str


# ---- pictures ----------------------------------------------------------------------------------


def photo_like(
    size: tuple[int, int], mode: str = "RGB", seed: int = 0, noise: float = 0.08
) -> Image.Image:
    """Smooth colour gradients plus mild noise: compresses like a photo, quickly made."""
    w, h = size
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 256), max(2, w // 256), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
    if noise:
        img = Image.blend(img, Image.effect_noise((w, h), 12).convert("RGB"), noise)
    return img if mode == "RGB" else img.convert(mode)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---- JPEG surgery ------------------------------------------------------------------------------


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every marker segment up to the first EOI, a scan's
    entropy-coded data counted in its SOS segment. A plain byte-by-byte reading, kept
    apart from the parser under test so that the two can be compared."""
    out: list[tuple[int, int, int]] = []
    pos = 2
    while pos < len(data):
        assert data[pos] == 0xFF, f"marker expected at {pos}"
        while data[pos] == 0xFF:
            pos += 1
        marker, start = data[pos], pos - 1
        pos += 1
        if marker == 0xD9:
            out.append((marker, start, pos))
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append((marker, start, pos))
            continue
        pos += struct.unpack_from(">H", data, pos)[0]
        if marker == 0xDA:
            while not (data[pos] == 0xFF and data[pos + 1] not in (0x00, 0xFF, *range(0xD0, 0xD8))):
                pos += 1
        out.append((marker, start, pos))
    return out


def scan_count(data: bytes) -> int:
    return sum(1 for marker, _, _ in jpeg_segments(data) if marker == 0xDA)


def repeat_scan(data: bytes, copies: int, pick: str = "smallest") -> bytes:
    """The JPEG with one of its scans (the smallest, or the first: the DC scan of every
    component) inserted `copies` more times before its end. libjpeg decodes every copy."""
    segs = jpeg_segments(data)
    scans = [(s, e) for m, s, e in segs if m == 0xDA]
    start, end = scans[0] if pick == "first" else min(scans, key=lambda se: se[1] - se[0])
    eoi = segs[-1][1]
    return data[:eoi] + data[start:end] * copies + data[eoi:]


def fill_with_scans(data: bytes, limit: int = MAX_BYTES, pick: str = "smallest") -> bytes:
    """As many repeated scans as fit in `limit` bytes."""
    segs = jpeg_segments(data)
    scans = [(s, e) for m, s, e in segs if m == 0xDA]
    start, end = scans[0] if pick == "first" else min(scans, key=lambda se: se[1] - se[0])
    return repeat_scan(data, (limit - len(data)) // (end - start), pick)


def with_segments(data: bytes, count: int, payload: bytes = b"") -> bytes:
    """`count` comment segments inserted after SOI: each one a step of every marker loop."""
    com = b"\xff\xfe" + struct.pack(">H", 2 + len(payload)) + payload
    return data[:2] + com * count + data[2:]


def with_restarts_flood(data: bytes, count: int) -> bytes:
    """`count` stray RST markers between segments (libjpeg skips them; each is a loop step)."""
    return data[:2] + b"\xff\xd0" * count + data[2:]


def set_sof(data: bytes, marker: int | None = None, precision: int | None = None) -> bytes:
    """Rewrite the frame header's marker (coding process) or sample precision."""
    out = bytearray(data)
    for m, s, _ in jpeg_segments(data):
        if m in (0xC0, 0xC1, 0xC2):
            if marker is not None:
                out[s + 1] = marker
            if precision is not None:
                out[s + 4] = precision
            return bytes(out)
    raise ValueError("no frame header")


def jpeg_header_only(size: tuple[int, int]) -> bytes:
    """A baseline JPEG that claims `size` and holds one empty scan: libjpeg pads the rest."""
    data = encode(Image.new("L", (16, 16), 128), "JPEG")
    out = bytearray()
    for m, s, e in jpeg_segments(data):
        seg = bytearray(data[s:e])
        if m == 0xC0:
            struct.pack_into(">HH", seg, 5, size[1], size[0])
        if m == 0xDA:  # keep the scan header, drop its data
            seg = seg[: 2 + struct.unpack_from(">H", seg, 2)[0]]
        out += seg
    return data[:2] + bytes(out)


# ---- PNG surgery -------------------------------------------------------------------------------


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body))


def png_from_rows(
    size: tuple[int, int], color_type: int, bit_depth: int, raw: bytes, extra: bytes = b""
) -> bytes:
    """A PNG from filtered scanlines (`raw`, already zlib-compressed), `extra` chunks
    placed before its image data."""
    ihdr = struct.pack(">IIBBBBB", size[0], size[1], bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", raw)
        + png_chunk(b"IEND", b"")
    )


def zeros_stream(total: int, block: int = 1 << 20) -> bytes:
    """A zlib stream that inflates to at least `total` zero bytes (whole blocks), built
    by repeating one flushed block rather than compressing them all (the checksum is
    left wrong: a decoder that stops when the image is full never reads it)."""
    comp = zlib.compressobj(9)
    head = comp.compress(b"\0" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    body = comp.compress(b"\0" * block) + comp.flush(zlib.Z_FULL_FLUSH)
    return head + body * max(0, -(-total // block) - 1) + comp.flush()


def png_flat(size: tuple[int, int], color_type: int = 6, bit_depth: int = 8) -> bytes:
    """A maximal-cost flat PNG: every row filter 0 and zero samples, a few kB on the wire."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = 1 + size[0] * channels * bit_depth // 8
    return png_from_rows(size, color_type, bit_depth, zeros_stream(row * size[1]))


def png_overflowing(size: tuple[int, int], extra_bytes: int) -> bytes:
    """A small PNG whose image data inflates to far more than its pixels need."""
    row = 1 + size[0] * 3
    return png_from_rows(size, 2, 8, zeros_stream(row * size[1] + extra_bytes))


def png_many_chunks(count: int) -> bytes:
    """A tiny PNG with `count` empty private chunks before its image data."""
    img = encode(Image.new("RGB", (8, 8)), "PNG")
    return img[:33] + png_chunk(b"prVt", b"") * count + img[33:]


def apng() -> bytes:
    frames = [Image.new("RGB", (64, 64), c) for c in ("red", "green", "blue")]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


# ---- containers that lie about their size ------------------------------------------------------


def ico_with_png(size: tuple[int, int]) -> bytes:
    """An ICO whose directory says 256x256 and whose image is a PNG of `size`."""
    png = png_flat(size, color_type=6)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def icns_with_png(size: tuple[int, int]) -> bytes:
    """An ICNS whose 'ic10' (1024x1024) element holds a PNG of `size`."""
    png = png_flat(size, color_type=6)
    element = b"ic10" + struct.pack(">I", 8 + len(png)) + png
    return b"icns" + struct.pack(">I", 8 + len(element)) + element


def gif_many_frames(frames: int) -> bytes:
    imgs = [Image.new("P", (64, 64), i % 256) for i in range(frames)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:])


def tiff_lzw(size: tuple[int, int]) -> bytes:
    return encode(Image.new("RGB", size), "TIFF", compression="tiff_lzw")


def bmp_rle(size: tuple[int, int]) -> bytes:
    """An 8-bit RLE BMP: Pillow's RLE decoder runs in Python, a step per run."""
    w, h = size
    rows = (b"\x00" * 0 + b"\xff\x00" * (w // 255) + bytes([w % 255, 0]) + b"\x00\x00") * h
    rle = rows + b"\x00\x01"
    palette = bytes(1024)
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(rle), 2835, 2835, 256, 0)
    return (
        b"BM"
        + struct.pack("<IHHI", header_size + len(rle), 0, 0, header_size)
        + info
        + palette
        + rle
    )


# ---- the corpus --------------------------------------------------------------------------------


@functools.cache
def _phone_picture() -> Image.Image:
    return photo_like(PHONE)


def _phone_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # held upright: the sensor's landscape frame rotated on display
    return encode(_phone_picture(), "JPEG", quality=90, exif=exif)


def _phone_mpo() -> bytes:
    """A phone photo with a second image after the first (as Pixel/Samsung gain maps)."""
    main = _phone_picture()
    second = photo_like((PHONE[0] // 4, PHONE[1] // 4), seed=1)
    return encode(main, "MPO", save_all=True, append_images=[second], quality=90)


def _max_progressive(subsampling: int) -> bytes:
    return encode(
        photo_like(MAX_SIZE), "JPEG", quality=75, progressive=True, subsampling=subsampling
    )


@functools.cache
def _grey_progressive(size: tuple[int, int] = (6000, 6000)) -> bytes:
    return encode(photo_like(size, "L", noise=0.02), "JPEG", quality=60, progressive=True)


CASES: dict[str, Case] = {
    # -- legitimate inputs at the limits
    "phone-12mp-jpeg": Case(lambda: [_phone_jpeg()], DECODED, "4032x3024 baseline, EXIF rotation"),
    "phone-12mp-progressive": Case(
        lambda: [encode(_phone_picture(), "JPEG", quality=90, progressive=True)],
        DECODED,
        "4032x3024, libjpeg's 10-scan script",
    ),
    "phone-12mp-mpo": Case(lambda: [_phone_mpo()], DECODED, "phone photo + second image (MPO)"),
    "max-jpeg-baseline": Case(
        lambda: [encode(photo_like(MAX_SIZE), "JPEG", quality=85)], DECODED, "8000x5000 baseline"
    ),
    "max-jpeg-progressive-420": Case(
        lambda: [_max_progressive(2)], DECODED, "8000x5000 progressive 4:2:0 (120 MB coefficients)"
    ),
    "max-png-rgb": Case(
        lambda: [encode(ImageOps.posterize(photo_like(MAX_SIZE, noise=0), 4), "PNG")],
        DECODED,
        "8000x5000 RGB, smooth gradients (a photo would not fit 6 MB)",
    ),
    "max-png-rgba-flat": Case(lambda: [png_flat(MAX_SIZE, 6)], DECODED, "8000x5000 RGBA, 40 kB"),
    "max-png-rgba16-flat": Case(
        lambda: [png_flat(MAX_SIZE, 6, 16)], DECODED, "8000x5000 RGBA 16-bit: 320 MB to inflate"
    ),
    "max-png-grey16-flat": Case(
        lambda: [png_flat(MAX_SIZE, 0, 16)], DECODED, "8000x5000 16-bit grey"
    ),
    "max-webp": Case(
        lambda: [encode(photo_like((4000, 3000)), "WEBP", quality=80, method=0)],
        DECODED,
        "4000x3000 lossy WebP (the WebP limit)",
    ),
    "max-webp-lossless-flat": Case(
        lambda: [encode(Image.new("RGBA", (4000, 3000), (9, 99, 199, 128)), "WEBP", lossless=True)],
        DECODED,
        "4000x3000 lossless RGBA, a few hundred bytes",
    ),
    "webp-over-limit": Case(
        lambda: [encode(Image.new("RGB", (6000, 6000), "gray"), "WEBP", method=0)],
        TOO_LARGE,
        "6000x6000 WebP: 550 MB to decode",
    ),
    "header-only-jpeg": Case(
        lambda: [jpeg_header_only(MAX_SIZE)], DECODED, "8000x5000 claimed, one empty scan"
    ),
    "batch-16-phone-3mp": Case(
        lambda: [
            encode(photo_like((2000, 1500), seed=i, noise=0), "JPEG", quality=85) for i in range(16)
        ],
        DECODED,
        "16 images, 48 MP together",
    ),
    # -- repeated scans
    "grey-6000-scan-x2000": Case(
        lambda: [repeat_scan(_grey_progressive(), 2000)], REFUSED, "the finding's 259 kB file"
    ),
    "grey-6000-scan-6mb": Case(
        lambda: [fill_with_scans(_grey_progressive())], REFUSED, "the smallest scan up to 6 MB"
    ),
    "colour-dc-scan-6mb": Case(
        lambda: [fill_with_scans(_max_progressive(2), pick="first")],
        DECODED,
        "8000x5000: its DC scan repeated up to 6 MB (under the scan cap: bounded)",
    ),
    "progressive-444-max": Case(
        lambda: [_max_progressive(0)], TOO_LARGE, "8000x5000 4:4:4: 240 MB of coefficients"
    ),
    "scans-at-cap": Case(
        lambda: [_scans_at_cap(_max_progressive(2), "first")],
        DECODED,
        "8000x5000 4:2:0, its DC scan repeated up to the scan cap (7.7 MB)",
    ),
    "grey-6000-scans-at-cap": Case(
        lambda: [_scans_at_cap(_grey_progressive(), "smallest")],
        DECODED,
        "6000x6000 grey, its smallest scan repeated up to the scan cap",
    ),
    "batch-64-scan-repeats": Case(
        lambda: [repeat_scan(_grey_progressive((1000, 1000)), 1500)] * 64,
        REFUSED,
        "64 instances, each scans repeated",
    ),
    # -- segment floods and odd codings
    "jpeg-100k-segments": Case(
        lambda: [with_segments(encode(Image.new("RGB", (64, 64)), "JPEG"), 100_000)],
        REFUSED,
        "100,000 empty comment segments",
    ),
    "jpeg-rst-flood": Case(
        lambda: [with_restarts_flood(encode(Image.new("RGB", (64, 64)), "JPEG"), 2_000_000)],
        REFUSED,
        "2,000,000 stray restart markers",
    ),
    "jpeg-fill-flood": Case(
        lambda: [_fill_flood()], REFUSED, "5 MB of 0xFF fill before a marker (legal, slow)"
    ),
    "jpeg-arithmetic": Case(
        lambda: [set_sof(encode(Image.new("RGB", (64, 64)), "JPEG"), marker=0xC9)],
        REFUSED,
        "arithmetic-coding frame header",
    ),
    "jpeg-12-bit": Case(
        lambda: [set_sof(encode(Image.new("L", (64, 64)), "JPEG"), precision=12)],
        REFUSED,
        "12-bit samples",
    ),
    "jpeg-over-pixels": Case(
        lambda: [jpeg_header_only((8001, 5000))], TOO_LARGE, "one pixel column over the limit"
    ),
    # -- PNG
    "png-over-pixels": Case(lambda: [png_flat((8001, 5000), 2)], TOO_LARGE, "over the limit"),
    "png-inflate-overflow": Case(
        lambda: [png_overflowing((1000, 1000), 1 << 30)], DECODED, "1 GB of image data for 3 MB"
    ),
    "png-10k-chunks": Case(lambda: [png_many_chunks(10_000)], REFUSED, "10,000 empty chunks"),
    "png-500k-chunks": Case(lambda: [png_many_chunks(500_000)], REFUSED, "500,000 empty chunks"),
    "apng": Case(lambda: [apng()], REFUSED, "animated PNG"),
    # -- containers and formats we do not take
    # 144 megapixels: under twice Pillow's default limit, so only a (silenced) warning
    "ico-png-12k": Case(
        lambda: [ico_with_png((12000, 12000))], REFUSED, "ICO saying 256x256, PNG 12000x12000"
    ),
    "icns-png-12k": Case(
        lambda: [icns_with_png((12000, 12000))], REFUSED, "ICNS holding a 12000x12000 PNG"
    ),
    "gif-1000-frames": Case(lambda: [gif_many_frames(1000)], REFUSED, "GIF (not accepted)"),
    "tiff-lzw": Case(lambda: [tiff_lzw((6000, 6000))], REFUSED, "TIFF (not accepted)"),
    "bmp-rle": Case(lambda: [bmp_rle((6000, 6000))], REFUSED, "8-bit RLE BMP (not accepted)"),
}


def _scans_at_cap(data: bytes, pick: str) -> bytes:
    from dogbreed.core.imagecheck import MAX_JPEG_SCANS

    return repeat_scan(data, MAX_JPEG_SCANS - scan_count(data), pick)


def _fill_flood() -> bytes:
    data = encode(Image.new("RGB", (64, 64)), "JPEG")
    return data[:2] + b"\xff" * (5 << 20) + data[2:]


@functools.cache
def corpus(name: str) -> tuple[bytes, ...]:
    """The case's image bodies, made once per process."""
    return tuple(CASES[name].make())
