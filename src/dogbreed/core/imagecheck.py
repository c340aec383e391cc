"""What decoding an image will cost, read from its bytes before any decoder runs.

A header's width and height bound the pixels, not the work: a progressive JPEG
may repeat its scans (libjpeg decodes every one and only warns), a file may hold
thousands of tiny segments that Pillow walks one by one in Python, and some
formats Pillow opens decode at open or carry a second image of any size. So the
format is identified by its magic bytes, only formats whose decoding we can bound
are accepted, and their structure is walked here (in bounded loops) to refuse
what would cost more than a legitimate image of the same size:

    JPEG  baseline, extended or progressive Huffman coding, 8-bit, 1-4 components;
          at most MAX_JPEG_SCANS scans and MAX_JPEG_SEGMENTS segments before the
          end of the first image; a multi-scan JPEG (progressive) holds all its DCT
          coefficients in memory, so those must fit MAX_COEFFICIENT_BYTES.
    PNG   one still image (no APNG), at most MAX_PNG_CHUNKS chunks.
    WebP  one still image (lossy or lossless; no animation), at most MAX_WEBP_PIXELS:
          Pillow decodes WebP through libwebp's animation decoder, which holds several
          full-size RGBA canvases (about 15 bytes a pixel at the peak).

Pixels are bounded by the caller's limit, read from the same header. Errors are
ImageError (400: not an image we take) and ImageTooLargeError (413: too costly).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from dogbreed.core.errors import ImageError, ImageTooLargeError

# The formats we decode, as Pillow names them (its `formats=` argument to Image.open).
# MPO is a JPEG whose first image is all we decode (phones write it: depth maps, gain maps).
PILLOW_FORMATS = {"JPEG": ("JPEG", "MPO"), "PNG": ("PNG",), "WEBP": ("WEBP",)}
ACCEPTED = "JPEG, PNG or WebP (still images)"

# libjpeg's standard progressive script has 10 scans for colour and 6 for grey; mozjpeg's
# scan optimisation and Photoshop write fewer than 20. Each scan is a pass over its
# components' blocks, so scans x pixels is the work a header does not show.
MAX_JPEG_SCANS = 32
# Segments before the first image's end: tables, EXIF, XMP, ICC profile chunks, and in a
# progressive file a Huffman table per scan. Phones write a dozen or two.
MAX_JPEG_SEGMENTS = 256
# A multi-scan JPEG keeps every block's 64 coefficients (2 bytes each) until the last
# scan: 120 MB for 40 megapixels in 4:2:0 colour (a phone's sampling), 240 MB in 4:4:4.
MAX_COEFFICIENT_BYTES = 128 * 1024 * 1024
# Fill bytes (0xFF) may pad any marker; Pillow steps over them one by one in Python (about
# 0.3 us each). Encoders write none or a few.
MAX_JPEG_FILL_BYTES = 65536
# 12 megapixels of WebP peak at about 185 MB above idle (36 would take 550 MB).
MAX_WEBP_PIXELS = 12_000_000
# Pillow walks chunks in Python. Encoders split image data into 8-64 kB IDAT chunks:
# a 6 MB PNG has well under a thousand.
MAX_PNG_CHUNKS = 4096

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

_SOF_SUPPORTED = {0xC0, 0xC1, 0xC2}  # Huffman: baseline, extended sequential, progressive
# Every other start-of-frame: lossless, hierarchical, arithmetic coding.
_SOF_OTHER = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_SOS, _EOI, _DNL = 0xDA, 0xD9, 0xDC
# Markers without a length: RST0-7, TEM (and SOI, which may not repeat).
_STANDALONE = {0x01, *range(0xD0, 0xD8)}
# In entropy-coded data 0xFF is followed by a stuffed 0x00 or a restart marker; anything
# else (after optional fill bytes 0xFF) is the next marker.
_NEXT_MARKER = re.compile(rb"\xff(?![\x00\xd0-\xd7\xff])")
_NOT_FILL = re.compile(rb"[^\xff]")


@dataclass(frozen=True)
class ImageInfo:
    """What the bytes say about an image: Pillow's format names for it, its size, and
    (JPEG) the number of scans."""

    kind: str  # "JPEG", "PNG" or "WEBP"
    width: int
    height: int
    scans: int = 1

    @property
    def pillow_formats(self) -> tuple[str, ...]:
        return PILLOW_FORMATS[self.kind]


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Identify the format by its magic bytes and check what decoding it will cost.

    Raises ImageError for bytes that are not an accepted format or are malformed,
    ImageTooLargeError for an image over `max_pixels` or over a cost limit.
    """
    if not data:
        raise ImageError("empty image: the request body has no bytes")
    if data.startswith(JPEG_MAGIC):
        info = jpeg_info(data)
    elif data.startswith(PNG_MAGIC):
        info = png_info(data)
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        info = webp_info(data)
    else:
        raise ImageError(f"cannot decode image: not a recognised image format (send {ACCEPTED})")
    check_pixels(info.width, info.height, max_pixels)
    return info


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} pixels, over the limit of {max_pixels}"
        )


def _malformed(what: str) -> ImageError:
    return ImageError(f"cannot decode image: {what}")


# ---- JPEG ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    # (component id, horizontal sampling, vertical sampling)
    components: tuple[tuple[int, int, int], ...]


def jpeg_info(data: bytes) -> ImageInfo:
    """Walk a JPEG's markers up to its first end-of-image, counting segments and scans.

    Only the first image counts: what follows it (an MPO's other frames, a gain map)
    Pillow does not decode for us. Never raises anything but ImageError.
    """
    if not data.startswith(JPEG_MAGIC):
        raise _malformed("not a JPEG (no start-of-image marker)")
    frame: _Frame | None = None
    scans = segments = fill = 0
    pos = 2
    while True:
        start = pos
        marker, pos = _next_marker(data, pos)
        fill += pos - start - 2
        if fill > MAX_JPEG_FILL_BYTES:
            raise ImageError(
                f"cannot decode image: JPEG with over {MAX_JPEG_FILL_BYTES} fill bytes"
            )
        if marker == _EOI:
            break
        segments += 1  # standalone markers too: each is a step of this loop and Pillow's
        if segments > MAX_JPEG_SEGMENTS:
            raise ImageError(f"cannot decode image: JPEG with over {MAX_JPEG_SEGMENTS} segments")
        if marker in _STANDALONE:
            continue
        if marker == 0xD8:
            raise _malformed("JPEG start-of-image marker inside the image")
        body, pos = _segment(data, pos)
        if marker in _SOF_SUPPORTED:
            if frame is not None:
                raise _malformed("JPEG with more than one frame header")
            frame = _parse_frame(body)
        elif marker in _SOF_OTHER:
            raise ImageError(
                "cannot decode image: JPEG coding not accepted (lossless, hierarchical or "
                "arithmetic); send a baseline or progressive JPEG"
            )
        elif marker == _DNL:
            raise _malformed("JPEG with a DNL marker (height defined after the scan)")
        elif marker == _SOS:
            if frame is None:
                raise _malformed("JPEG scan before its frame header")
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageError(
                    f"cannot decode image: JPEG with over {MAX_JPEG_SCANS} scans "
                    "(a progressive JPEG's scans repeated?)"
                )
            _check_scan(body, frame)
            pos = _skip_entropy_data(data, pos)
    if frame is None or scans == 0:
        raise _malformed("JPEG without a frame or a scan")
    if scans > 1:
        _check_coefficient_memory(frame)
    return ImageInfo("JPEG", frame.width, frame.height, scans)


def _next_marker(data: bytes, pos: int) -> tuple[int, int]:
    """(marker, position after it); fill bytes (0xFF) before a marker are allowed."""
    if pos >= len(data) or data[pos] != 0xFF:
        raise _malformed("JPEG truncated or corrupt (a marker was expected)")
    found = _NOT_FILL.search(data, pos)  # any run of fill bytes, at C speed
    if found is None:
        raise _malformed("JPEG truncated (no end-of-image marker)")
    pos = found.start()
    if data[pos] == 0x00:
        raise _malformed("JPEG corrupt (0xFF00 where a marker was expected)")
    return data[pos], pos + 1


def _segment(data: bytes, pos: int) -> tuple[bytes, int]:
    """(segment body, position after it) for the length-prefixed segment at `pos`."""
    if pos + 2 > len(data):
        raise _malformed("JPEG truncated in a segment header")
    (length,) = struct.unpack_from(">H", data, pos)
    if length < 2 or pos + length > len(data):
        raise _malformed("JPEG truncated or corrupt (segment length past the end)")
    return data[pos + 2 : pos + length], pos + length


def _parse_frame(body: bytes) -> _Frame:
    if len(body) < 6:
        raise _malformed("JPEG frame header too short")
    precision, height, width, count = struct.unpack_from(">BHHB", body)
    if precision != 8:
        raise ImageError(f"cannot decode image: {precision}-bit JPEG (only 8-bit is accepted)")
    if width == 0 or height == 0:
        raise _malformed("JPEG with zero width or height")
    if not 1 <= count <= 4 or len(body) < 6 + 3 * count:
        raise _malformed(f"JPEG frame with {count} components")
    components = []
    for i in range(count):
        ident, sampling, _table = struct.unpack_from(">BBB", body, 6 + 3 * i)
        h, v = sampling >> 4, sampling & 0x0F
        if not (1 <= h <= 4 and 1 <= v <= 4):
            raise _malformed("JPEG component with invalid sampling factors")
        components.append((ident, h, v))
    return _Frame(width, height, tuple(components))


def _check_scan(body: bytes, frame: _Frame) -> None:
    if not body or not 1 <= body[0] <= 4 or len(body) < 1 + 2 * body[0] + 3:
        raise _malformed("JPEG scan header malformed")
    known = {c[0] for c in frame.components}
    if any(body[1 + 2 * i] not in known for i in range(body[0])):
        raise _malformed("JPEG scan names a component the frame does not have")


def _skip_entropy_data(data: bytes, pos: int) -> int:
    """The position of the marker that ends a scan's entropy-coded data."""
    found = _NEXT_MARKER.search(data, pos)
    if found is None:
        raise _malformed("JPEG truncated in a scan (no end-of-image marker)")
    return found.start()


def coefficient_bytes(frame: _Frame) -> int:
    """Memory libjpeg allocates to buffer a multi-scan image's DCT coefficients: per
    component, its blocks padded to whole MCUs, 64 coefficients of 2 bytes each."""
    hmax = max(c[1] for c in frame.components)
    vmax = max(c[2] for c in frame.components)
    mcus_x = -(-frame.width // (8 * hmax))
    mcus_y = -(-frame.height // (8 * vmax))
    blocks = sum(mcus_x * h * mcus_y * v for _, h, v in frame.components)
    return blocks * 64 * 2


def _check_coefficient_memory(frame: _Frame) -> None:
    need = coefficient_bytes(frame)
    if need > MAX_COEFFICIENT_BYTES:
        raise ImageTooLargeError(
            f"progressive JPEG of {frame.width}x{frame.height} pixels would hold "
            f"{need // 2**20} MiB of coefficients while decoding, over the "
            f"{MAX_COEFFICIENT_BYTES // 2**20} MiB limit; send it smaller or as a baseline JPEG"
        )


# ---- PNG -------------------------------------------------------------------------------------


def png_info(data: bytes) -> ImageInfo:
    """Walk a PNG's chunks: IHDR first, no animation, a bounded number of chunks.

    The decoder's own work is bounded by the pixels: Pillow inflates image data only
    until the image is full, rows of at most 8 bytes a pixel (checked in tests).
    """
    pos = len(PNG_MAGIC)
    chunks = 0
    width = height = 0
    seen_idat = False
    while pos + 8 <= len(data):
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > 2**31 - 1 or pos + 12 + length > len(data):
            raise _malformed("PNG truncated or corrupt (chunk past the end)")
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise ImageError(f"cannot decode image: PNG with over {MAX_PNG_CHUNKS} chunks")
        if chunks == 1:
            if ctype != b"IHDR" or length != 13:
                raise _malformed("PNG does not start with its header chunk")
            width, height = struct.unpack_from(">II", data, pos + 8)
        elif ctype == b"acTL":
            raise ImageError("cannot decode image: animated PNG (send a still image)")
        elif ctype == b"IDAT":
            seen_idat = True
        elif ctype == b"IEND":
            break
        pos += 12 + length
    if not chunks:
        raise _malformed("PNG truncated (no header chunk)")
    if width == 0 or height == 0:
        raise _malformed("PNG with zero width or height")
    if not seen_idat:
        raise _malformed("PNG without image data")
    return ImageInfo("PNG", width, height)


# ---- WebP ------------------------------------------------------------------------------------


def webp_info(data: bytes) -> ImageInfo:
    """Size and kind from a WebP's first chunk (VP8, VP8L or VP8X); no animation.

    libwebp decodes one still image into a buffer of the header's size: its work is
    bounded by the pixels and the bytes.
    """
    if len(data) < 30:
        raise _malformed("WebP truncated")
    fourcc = data[12:16]
    chunk = data[20:]
    if fourcc == b"VP8X":
        flags = chunk[0]
        if flags & 0x02:
            raise ImageError("cannot decode image: animated WebP (send a still image)")
        width = 1 + int.from_bytes(chunk[4:7], "little")
        height = 1 + int.from_bytes(chunk[7:10], "little")
    elif fourcc == b"VP8 ":
        if chunk[3:6] != b"\x9d\x01\x2a":
            raise _malformed("WebP (lossy) frame header corrupt")
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", chunk, 6))
    elif fourcc == b"VP8L":
        if chunk[0] != 0x2F:
            raise _malformed("WebP (lossless) header corrupt")
        bits = int.from_bytes(chunk[1:5], "little")
        width, height = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    else:
        raise _malformed("WebP without an image chunk")
    if width == 0 or height == 0:
        raise _malformed("WebP with zero width or height")
    if width * height > MAX_WEBP_PIXELS:
        raise ImageTooLargeError(
            f"WebP of {width}x{height} pixels, over the WebP limit of {MAX_WEBP_PIXELS} "
            "(send it as a JPEG or PNG)"
        )
    return ImageInfo("WEBP", width, height)
