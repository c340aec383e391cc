"""Training the backbone from decoded images cached on the device.

With the backbone training (`--unfreeze`, or `--weights none`), every epoch used
to decode every JPEG again: on a GPU the decoder, not the model, set the pace
(H100: 1,944 images/s against 3,944 for the model alone). Here the device
pipeline decodes each training image once, squashes it to CACHE_SIDE x
CACHE_SIDE and keeps it on the training device as uint8; every batch after that
is a gather, one batched crop-and-resize (train.resample: two matrix products
for the whole batch, not a resize per image), a flip and the normalisation.

    cache build   loader workers read bytes -> device decode -> EXIF orientation ->
                  antialiased resize to (3, S, S) uint8 -> pixels[i]     (once per run)
    each batch    pixels[idx] (B, 3, S, S) -> crop boxes mapped onto S x S ->
                  crop_resize (B, 3, 224, 224) -> flip -> normalise

The crop boxes are drawn on each image's own upright size, as RandomResizedCrop
draws them, for a whole epoch at once from a generator keyed by (seed, epoch)
(train.draws), so the draws do not depend on ranks, resume or batch order. The
order is DistributedSampler's, the same as the loader's, and an undecodable
image is dropped from its batch and counted every epoch, as the loader does.

What differs from decoding each epoch: the crop is taken from the squashed
image, so a small crop of a large photo has fewer source pixels (at S=320, an
8% crop of a 500x375 photo reads about 90x90 pixels instead of 140x105).
Memory: N x 3 x S x S bytes on every rank (each rank's share changes every
epoch), 2.05 GB for dogImages' 6,680 training images at S=320. Where that is
over half the free device memory, `auto` falls back to decoding every epoch.
The cache is not written to disk: rebuilding it on resume is one decode pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from dogbreed.core.errors import ConfigError
from dogbreed.core.preprocess import CROP
from dogbreed.train import distributed
from dogbreed.train.device_data import (
    EncodedDataset,
    collate_encoded,
    decode,
    normalize,
    resize,
)
from dogbreed.train.draws import mix, sample_crops, sample_flips
from dogbreed.train.feature_bank import MEMORY_SHARE, available_bytes
from dogbreed.train.loop import Loader, Runtime, make_loader
from dogbreed.train.resample import crop_resize, scale_boxes

log = logging.getLogger(__name__)

CACHE_SIDE = 320  # each image squashed to S x S: 300 KB a training image
_EPOCH_DRAWS = 0x5EED  # keeps this generator's stream apart from others keyed on the seed


def wanted(rt: Runtime, trains_backbone: bool) -> bool:
    """Whether to cache: the device pipeline training the backbone, unless --decode-cache off."""
    mode = rt.cfg.decode_cache
    usable = rt.cfg.pipeline == "device" and trains_backbone
    if mode == "on" and not usable:
        raise ConfigError(
            "--decode-cache on needs --pipeline device and a backbone that trains "
            "(--unfreeze or --weights none)"
        )
    return usable and mode != "off"


def planned_bytes(images: int, side: int = CACHE_SIDE) -> int:
    return images * 3 * side * side


def fits(rt: Runtime, images: int) -> bool:
    """Room for the cache in MEMORY_SHARE of free memory; `on` insists (ConfigError)."""
    need, free = planned_bytes(images), available_bytes(rt.device)
    # Every rank must decide alike (one training from the cache, another from the loader,
    # or one refusing while the rest wait in an all-reduce): the least free memory rules.
    free = -distributed.all_max(rt.dist, -float(free))
    if need <= MEMORY_SHARE * free:
        return True
    message = (
        f"a decode cache of {images} images needs {need / 1e9:.1f} GB, over "
        f"{MEMORY_SHARE:.0%} of the {free / 1e9:.1f} GB free"
    )
    if rt.cfg.decode_cache == "on":
        raise ConfigError(f"{message}: pass --decode-cache off")
    log.warning("%s: decoding every epoch instead", message)
    return False


def training_loader(
    rt: Runtime, samples: Sequence[tuple[Path, int]], workers: int, trains_backbone: bool
) -> Loader:
    """What a run trains from: decoded images cached on the device where the backbone
    trains and they fit; otherwise the configured pipeline, its workers kept from epoch
    to epoch (move it on with loop.set_epoch)."""
    if wanted(rt, trains_backbone) and fits(rt, len(samples)):
        cache = CachedLoader(rt, samples, workers)
        log.info(
            "decode cache: %d images at %dx%d, %.2f GB on %s, built in %.1f s (%d undecodable)",
            len(samples), CACHE_SIDE, CACHE_SIDE, cache.pixels.nbytes / 1e9, rt.device,
            cache.build_seconds, cache.undecodable,
        )  # fmt: skip
        return cache
    return make_loader(rt, list(samples), True, workers, persistent=True)


class CachedLoader:
    """Training batches (images, targets, dropped) from the cache, as make_loader's are."""

    def __init__(self, rt: Runtime, samples: Sequence[tuple[Path, int]], workers: int) -> None:
        self.rt = rt
        n = len(samples)
        self.targets = torch.tensor([t for _, t in samples], dtype=torch.long)
        self.sizes = torch.zeros(n, 2, dtype=torch.long)  # (H, W) upright; 0: undecodable
        self.pixels = torch.zeros(n, 3, CACHE_SIDE, CACHE_SIDE, dtype=torch.uint8, device=rt.device)
        self.cpu_decoded = 0  # per epoch, as make_loader's: none after the build
        self.built_cpu_decoded = 0  # the build's images decoded on the CPU
        start = time.perf_counter()
        self._fill(samples, workers)
        self.build_seconds = time.perf_counter() - start
        self.ok = self.sizes[:, 0] > 0
        # The loader's order: DistributedSampler over every sample, bad ones included.
        self.order = DistributedSampler(
            range(n), rt.dist.world_size, rt.dist.rank, shuffle=True, seed=rt.cfg.seed
        )
        self.epoch = 0

    @property
    def undecodable(self) -> int:
        return int((~self.ok).sum())

    def _fill(self, samples: Sequence[tuple[Path, int]], workers: int) -> None:
        """Decode every image once into pixels[i] (sizes[i] = its upright size)."""
        numbered = [(path, i) for i, (path, _) in enumerate(samples)]
        loader = DataLoader(
            EncodedDataset(numbered, train=False),  # box = (0, 0, H, W) of the upright image
            batch_size=self.rt.cfg.batch_size,
            num_workers=workers,
            collate_fn=collate_encoded,
            pin_memory=self.rt.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.rt.cfg.seed),  # not the run's RNG
        )
        for batch in loader:
            images, refused = decode(batch, self.rt.device)
            self.built_cpu_decoded += refused + sum(1 for s in batch.shapes if len(s) == 3)
            for number, img in zip(batch.targets.tolist(), images, strict=True):
                if img is None:
                    continue
                squashed = resize(img, CACHE_SIDE, CACHE_SIDE)  # (3, S, S) float 0-255
                self.pixels[number] = squashed.round_().clamp_(0, 255).to(torch.uint8)
                self.sizes[number] = torch.tensor(img.shape[-2:])
        if self.rt.device.type == "cuda":  # the build's time is its kernels' too
            torch.cuda.synchronize(self.rt.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.order) // self.rt.cfg.batch_size)

    def epoch_draws(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(boxes (N, 4) on the upright images, flips (N,)) for every sample this epoch."""
        g = torch.Generator().manual_seed(mix(self.rt.cfg.seed, _EPOCH_DRAWS, self.epoch))
        sizes = torch.where(self.ok.unsqueeze(1), self.sizes, 1)  # any box for a bad one
        boxes = sample_crops(sizes[:, 0], sizes[:, 1], g)
        return boxes, sample_flips(len(boxes), g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        # The epoch's boxes, flips, targets and decodable indices go to the device once;
        # a batch is then a slice there, with no per-batch copy or sync to wait on the
        # previous step. Batches are the loader's: DistributedSampler's order in chunks.
        dev, size = self.rt.device, self.rt.cfg.batch_size
        boxes, flips = self.epoch_draws()
        boxes = scale_boxes(boxes.double(), self.sizes.double(), (CACHE_SIDE, CACHE_SIDE))
        boxes, flips, targets = boxes.to(dev), flips.to(dev), self.targets.to(dev)
        keys = torch.tensor(list(self.order), dtype=torch.long)
        good = self.ok[keys]
        kept = [int(m.sum()) for m in good.split(size)]  # decodable images per batch
        idx_all = keys[good].to(dev)
        offset = 0
        for n, chunk in zip(kept, keys.split(size), strict=True):
            idx, offset = idx_all[offset : offset + n], offset + n
            if n == 0:  # every image of the batch undecodable
                empty = torch.empty((0, 3, CROP, CROP), device=dev)
                yield empty, torch.empty(0, dtype=torch.long, device=dev), len(chunk)
                continue
            pixels = crop_resize(self.pixels[idx], boxes[idx], flips=flips[idx])
            yield normalize(pixels, self.rt.cfg.channels_last), targets[idx], len(chunk) - n
