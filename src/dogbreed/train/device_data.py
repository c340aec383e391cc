"""The device data pipeline: loader workers read bytes, the training device decodes and augments.

On a GPU, decoding JPEGs on the CPU is what starves the model (the course loop
fed an H100 202 images/s; the model alone computes 8,749). Here the work splits:

    loader worker (CPU)  file bytes; header only: size, mode, EXIF orientation;
                         the random crop box and flip drawn as torchvision draws them
    training device      batched JPEG decode (nvjpeg on CUDA) -> EXIF orientation ->
                         per-sample crop + antialiased bilinear resize -> flip ->
                         ImageNet normalisation -> channels-last batch

What nvjpeg cannot take (PNG and other formats, CMYK JPEGs, a file without its
end marker) is decoded in the worker by the CPU path's own `open_image` and
travels as pixels; a JPEG the device decoder still refuses is decoded on the
CPU instead. Both are counted (`cpu_decoded`). Unreadable files are dropped and
counted exactly as the CPU path drops them.

train.device_loader runs the two stages (decode_stage, augment_stage) in two
threads on their own CUDA streams while the model trains. The same code runs
with device=cpu (libjpeg decode), which is how it is tested without a GPU.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from dogbreed.core.errors import ImageError
from dogbreed.core.preprocess import (
    CROP,
    DEFAULT_MAX_PIXELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    RESIZE,
    center_crop_box,
    open_image,
    resized_size,
)
from dogbreed.train.draws import RATIO, SCALE, Key, generator, split_key

EXIF_ORIENTATION = 0x0112
# JPEG colour modes nvjpeg decodes to RGB; CMYK/YCCK go the CPU way.
DEVICE_JPEG_MODES = {"RGB", "L"}


def sample_crop(
    height: int, width: int, g: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's RandomResizedCrop.get_params, same draws; from the
    global RNG as torchvision draws them, or from `g` (train.draws: one per sample).

    Written out so that a worker needs only the image's size, not its pixels;
    a test checks it against torchvision under the same seed.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(RATIO))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(SCALE[0], SCALE[1], generator=g).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g))
        w = round(math.sqrt(target_area * aspect.item()))
        h = round(math.sqrt(target_area / aspect.item()))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return top, left, h, w
    in_ratio = width / height  # no fit in 10 draws: the central crop, as torchvision does
    if in_ratio < min(RATIO):
        w, h = width, round(width / min(RATIO))
    elif in_ratio > max(RATIO):
        h, w = height, round(height * max(RATIO))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_flip(g: torch.Generator | None = None) -> bool:
    """RandomHorizontalFlip's draw (p=0.5), after the crop's, as in torchvision's Compose."""
    return bool(torch.rand(1, generator=g) < 0.5)


class Encoded(NamedTuple):
    """One sample as a worker sends it."""

    data: torch.Tensor  # uint8: file bytes (1-D, a JPEG for the device) or pixels (H, W, 3)
    target: int
    orientation: int  # EXIF orientation the device still has to apply (1: none)
    box: tuple[int, int, int, int]  # crop (top, left, h, w) of the upright image; eval: unused
    flip: bool


def _complete_jpeg(data: bytes) -> bool:
    """A JPEG ends with its EOI marker (some cameras append data after it)."""
    return b"\xff\xd9" in data[-4096:]


class EncodedDataset(Dataset):
    """Samples as Encoded tuples (None for an unreadable file); no pixel decoding of JPEGs."""

    def __init__(
        self,
        samples: Sequence[tuple[Path, int]],
        train: bool,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.samples = list(samples)
        self.train = train
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key) -> Encoded | None:
        i, seed = split_key(key)
        path, target = self.samples[i]
        try:
            data = path.read_bytes()
            fmt, mode, (width, height), orientation = _header(data, self.max_pixels)
        except (OSError, ImageError):
            return None
        if fmt == "JPEG" and mode in DEVICE_JPEG_MODES and _complete_jpeg(data):
            payload = torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if orientation in (5, 6, 7, 8):  # a quarter turn swaps the sides
                width, height = height, width
        else:
            try:
                img = open_image(data, self.max_pixels)  # upright RGB, as the CPU path has it
            except ImageError:
                return None
            payload = _pixels(img)
            orientation = 1
            width, height = img.size
        if not self.train:
            return Encoded(payload, target, orientation, (0, 0, height, width), False)
        g = generator(seed)
        box = sample_crop(height, width, g)
        return Encoded(payload, target, orientation, box, sample_flip(g))


def _pixels(img: Image.Image) -> torch.Tensor:
    """An RGB image as a uint8 (H, W, 3) tensor."""
    return torch.from_numpy(np.array(img, dtype=np.uint8))


def _header(data: bytes, max_pixels: int) -> tuple[str, str, tuple[int, int], int]:
    """(format, mode, (width, height), EXIF orientation) from the header alone."""
    if not data:
        raise ImageError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # lazy: reads the header, not the pixels
            orientation = img.getexif().get(EXIF_ORIENTATION, 1) if img.format == "JPEG" else 1
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image header: {exc}") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(str(exc)) from None
    if img.width * img.height > max_pixels:
        raise ImageError(f"{img.width}x{img.height} is over the pixel limit")
    orientation = orientation if orientation in range(1, 9) else 1
    return img.format or "", img.mode, img.size, orientation


class EncodedBatch(NamedTuple):
    """A batch as it crosses from a loader worker: every payload packed end to end in one
    uint8 tensor (one shared-memory block and one pinned copy per batch, not one per image)."""

    packed: torch.Tensor  # (total bytes,) uint8: the payloads one after another
    shapes: list[tuple[int, ...]]  # each payload's shape: (bytes,) a JPEG, (H, W, 3) pixels
    targets: torch.Tensor  # (N,) int64
    orientations: list[int]
    boxes: list[tuple[int, int, int, int]]
    flips: torch.Tensor  # (N,) bool
    dropped: int  # unreadable files left out of this batch

    @property
    def data(self) -> list[torch.Tensor]:
        """The payloads as views into `packed`, each in its own shape."""
        views, offset = [], 0
        for shape in self.shapes:
            n = math.prod(shape)
            views.append(self.packed[offset : offset + n].view(shape))
            offset += n
        return views


def collate_encoded(batch: list[Encoded | None]) -> EncodedBatch:
    good = [s for s in batch if s is not None]
    packed = (
        torch.cat([s.data.reshape(-1) for s in good]) if good else torch.empty(0, dtype=torch.uint8)
    )
    return EncodedBatch(
        packed=packed,
        shapes=[tuple(s.data.shape) for s in good],
        targets=torch.tensor([s.target for s in good], dtype=torch.long),
        orientations=[s.orientation for s in good],
        boxes=[s.box for s in good],
        flips=torch.tensor([s.flip for s in good], dtype=torch.bool),
        dropped=len(batch) - len(good),
    )


def orient(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """Apply an EXIF orientation to a (C, H, W) image, as Pillow's exif_transpose does."""
    if orientation == 2:  # mirrored
        return img.flip(-1)
    if orientation == 3:  # upside down
        return img.flip(-2, -1)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:  # Pillow's TRANSPOSE
        return img.transpose(-2, -1)
    if orientation == 6:  # Pillow's ROTATE_270 (a quarter turn clockwise)
        return img.transpose(-2, -1).flip(-1)
    if orientation == 7:  # Pillow's TRANSVERSE
        return img.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:  # Pillow's ROTATE_90 (a quarter turn anticlockwise)
        return img.transpose(-2, -1).flip(-2)
    return img


def _decode_jpegs(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    from torchvision.io import ImageReadMode, decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice, once per batch
        out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    return out if isinstance(out, list) else [out]


def decode(batch: EncodedBatch, device: torch.device) -> tuple[list[torch.Tensor | None], int]:
    """Upright uint8 (3, H, W) images on the device (None: undecodable), and how many
    JPEGs had to be decoded on the CPU because the device decoder refused them."""
    data = batch.data  # views into the one packed tensor
    images: list[torch.Tensor | None] = [None] * len(data)
    jpegs = [i for i, d in enumerate(data) if d.dim() == 1]
    for i, d in enumerate(data):
        if d.dim() == 3:  # decoded by the worker
            images[i] = _to_chw(d, device)
    refused = 0
    if jpegs:
        try:
            decoded: list[torch.Tensor | None] = list(
                _decode_jpegs([data[i] for i in jpegs], device)
            )
        except RuntimeError:  # one bad file fails the whole batch: retry one by one
            decoded = []
            for i in jpegs:
                try:
                    decoded.append(_decode_jpegs([data[i]], device)[0])
                except RuntimeError:
                    refused += 1
                    decoded.append(_cpu_decode(data[i], device))
        for i, img in zip(jpegs, decoded, strict=True):
            images[i] = None if img is None else orient(img, batch.orientations[i])
    return images, refused


def _to_chw(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """(H, W, 3) pixels from the CPU -> (3, H, W) on the device."""
    return pixels.to(device, non_blocking=True).permute(2, 0, 1)


def _cpu_decode(data: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """The CPU path's decoder for a JPEG the device refused; None when it is unreadable."""
    try:
        img = open_image(data.numpy().tobytes())
    except ImageError:
        return None
    return _to_chw(_pixels(img), device)


def resize(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, h, w) uint8 -> (3, height, width) float in [0, 255]: bilinear, antialiased."""
    return F.interpolate(
        img.unsqueeze(0).float(),
        size=(height, width),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]


def augment(
    images: Sequence[torch.Tensor], boxes: Sequence[tuple[int, int, int, int]], flips: torch.Tensor
) -> torch.Tensor:
    """RandomResizedCrop(224) + RandomHorizontalFlip on the device: (N, 3, 224, 224) float."""
    out = torch.empty((len(images), 3, CROP, CROP), device=images[0].device)
    for k, (img, (top, left, h, w)) in enumerate(zip(images, boxes, strict=True)):
        out[k] = resize(img[:, top : top + h, left : left + w], CROP, CROP)
    flips = flips.to(out.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(flips, out.flip(-1), out)


def resize_center_crop(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """The evaluation transform on the device (resize 256, centre crop 224): (N, 3, 224, 224)."""
    out = torch.empty((len(images), 3, CROP, CROP), device=images[0].device)
    for k, img in enumerate(images):
        w, h = resized_size(img.shape[-1], img.shape[-2], RESIZE)
        left, top, right, bottom = center_crop_box(w, h, CROP)
        out[k] = resize(img, h, w)[:, top:bottom, left:right]
    return out


@functools.cache
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std on the 0-255 scale, (1, 3, 1, 1), copied to the device once."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def normalize(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """[0, 255] float -> ImageNet-normalised, in the memory format the model runs in."""
    mean, std = _mean_std(batch.device)
    batch = (batch - mean) / std
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return batch.contiguous(memory_format=fmt)


class Decoded(NamedTuple):
    """A batch between the two stages: its decodable images, upright, on the device."""

    images: list[torch.Tensor]  # uint8 (3, H, W) each
    keep: list[int]  # their positions in the encoded batch
    batch: EncodedBatch
    dropped: int
    cpu_decoded: int


def decode_stage(batch: EncodedBatch, device: torch.device) -> Decoded:
    images, refused = decode(batch, device)
    keep = [i for i, img in enumerate(images) if img is not None]
    dropped = batch.dropped + len(images) - len(keep)
    cpu_decoded = refused + sum(1 for shape in batch.shapes if len(shape) == 3)
    return Decoded([images[i] for i in keep], keep, batch, dropped, cpu_decoded)


def augment_stage(
    d: Decoded, device: torch.device, train: bool, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(images (N, 3, 224, 224), targets (N,), dropped, cpu_decoded) from decoded images."""
    if not d.keep:
        empty = torch.empty((0, 3, CROP, CROP), device=device)
        return empty, torch.empty(0, dtype=torch.long, device=device), d.dropped, d.cpu_decoded
    if train:
        pixels = augment(d.images, [d.batch.boxes[i] for i in d.keep], d.batch.flips[d.keep])
    else:
        pixels = resize_center_crop(d.images)
    targets = d.batch.targets[d.keep].to(device, non_blocking=True)
    return normalize(pixels, channels_last), targets, d.dropped, d.cpu_decoded


def prepare(
    batch: EncodedBatch, device: torch.device, train: bool, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """(images, targets, dropped, cpu_decoded) on the device from one encoded batch."""
    return augment_stage(decode_stage(batch, device), device, train, channels_last)
