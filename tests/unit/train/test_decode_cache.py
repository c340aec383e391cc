"""The decode cache: built once, batches as the device pipeline makes them, bad images
counted every epoch, draws fixed by (seed, epoch), memory refused where it does not fit."""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from dogbreed.core.errors import ConfigError
from dogbreed.train import decode_cache
from dogbreed.train.decode_cache import CACHE_SIDE, CachedLoader
from dogbreed.train.device_data import augment, normalize
from dogbreed.train.distributed import Dist
from dogbreed.train.loop import Runtime, set_epoch
from support.train import CPU, config


def smooth(w: int, h: int, seed: int) -> Image.Image:
    """A gradient plus a little noise: resampling differences stay small."""
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy + seed * 20) % 256], -1)
    arr = arr + rng.integers(0, 8, arr.shape)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def write(folder, name: str, img: Image.Image | None, fmt: str = "JPEG"):
    path = folder / name
    if img is None:
        path.write_bytes(b"broken")
    else:
        buf = io.BytesIO()
        img.save(buf, fmt, quality=95) if fmt == "JPEG" else img.save(buf, fmt)
        path.write_bytes(buf.getvalue())
    return path


@pytest.fixture
def samples(tmp_path):
    """Seven images of the cache's own size (squashing is then the identity), a PNG and
    one unreadable file; targets 0-2."""
    files = [write(tmp_path, f"{i}.jpg", smooth(CACHE_SIDE, CACHE_SIDE, i)) for i in range(7)]
    files.append(write(tmp_path, "png.png", smooth(CACHE_SIDE, CACHE_SIDE, 9), "PNG"))
    files.insert(3, write(tmp_path, "bad.jpg", None))
    return [(path, i % 3) for i, path in enumerate(files)]


def runtime(tmp_path, rank: int = 0, world: int = 1, **overrides) -> Runtime:
    values = {"pipeline": "device", "batch_size": 4, "seed": 5, **overrides}
    cfg = config(tmp_path, tmp_path / "run", **values)
    return Runtime(cfg, Dist(rank=rank, world_size=world), CPU)


def test_the_cache_holds_each_image_once_and_knows_the_bad_one(tmp_path, samples):
    cache = CachedLoader(runtime(tmp_path), samples, workers=0)
    assert cache.pixels.shape == (9, 3, CACHE_SIDE, CACHE_SIDE)
    assert cache.pixels.dtype == torch.uint8
    assert cache.ok.tolist() == [True] * 3 + [False] + [True] * 5 and cache.undecodable == 1
    assert cache.built_cpu_decoded == 1  # the PNG
    decoded = np.asarray(Image.open(samples[0][0]).convert("RGB"))
    assert np.abs(cache.pixels[0].permute(1, 2, 0).numpy().astype(int) - decoded).max() <= 1


def test_batches_are_the_device_pipelines_crops_in_the_loaders_order(tmp_path, samples):
    rt = runtime(tmp_path)
    cache = CachedLoader(rt, samples, workers=0)
    set_epoch(cache, 2)
    batches = list(cache)
    boxes, flips = cache.epoch_draws()
    order = DistributedSampler(range(9), 1, 0, shuffle=True, seed=5)
    order.set_epoch(2)
    keys = [k for k in order if k != 3]
    assert len(cache) == len(batches) == 3
    assert sum(d for *_, d in batches) == 1  # the bad image, dropped from its batch
    images = torch.cat([b[0] for b in batches])
    assert torch.cat([b[1] for b in batches]).tolist() == [samples[k][1] for k in keys]
    assert images.is_contiguous(memory_format=torch.channels_last)
    # At the cache's own size the squash is the identity: the crops are augment()'s.
    pictures = [cache.pixels[k] for k in keys]
    expected = normalize(augment(pictures, boxes[keys].tolist(), flips[keys]), True)
    torch.testing.assert_close(images, expected, atol=1e-3, rtol=0)


def test_each_epoch_draws_anew_and_the_same_again_on_resume(tmp_path, samples):
    cache = CachedLoader(runtime(tmp_path), samples, workers=0)

    def epoch(n: int) -> torch.Tensor:
        set_epoch(cache, n)
        return torch.cat([b[0] for b in cache])

    first = epoch(1)
    assert not torch.equal(first, epoch(2))
    again = CachedLoader(runtime(tmp_path), samples, workers=2)  # a resumed run's
    set_epoch(again, 1)
    assert torch.equal(first, torch.cat([b[0] for b in again]))


def test_two_ranks_share_each_epoch_as_distributed_sampler_does(tmp_path, samples):
    for rank in (0, 1):
        cache = CachedLoader(runtime(tmp_path, rank, 2), samples, workers=0)
        set_epoch(cache, 1)
        order = DistributedSampler(range(9), 2, rank, shuffle=True, seed=5)
        order.set_epoch(1)
        got = [t for b in cache for t in b[1].tolist()]
        assert got == [samples[k][1] for k in order if k != 3]


def test_when_the_cache_is_used(tmp_path):
    assert decode_cache.wanted(runtime(tmp_path), trains_backbone=True)
    assert not decode_cache.wanted(runtime(tmp_path), trains_backbone=False)
    assert not decode_cache.wanted(runtime(tmp_path, decode_cache="off"), True)
    assert not decode_cache.wanted(runtime(tmp_path, pipeline="loader"), True)
    with pytest.raises(ConfigError, match="--decode-cache on needs --pipeline device"):
        decode_cache.wanted(runtime(tmp_path, pipeline="loader", decode_cache="on"), True)
    with pytest.raises(ConfigError, match="--decode-cache on needs"):
        decode_cache.wanted(runtime(tmp_path, decode_cache="on"), trains_backbone=False)


def test_a_cache_over_half_the_free_memory_is_refused_or_skipped(tmp_path, caplog):
    rt = runtime(tmp_path)
    images = 10**7  # 3 TB at 320 x 320
    assert decode_cache.planned_bytes(images) == images * 3 * CACHE_SIDE**2
    with caplog.at_level(logging.WARNING):
        assert not decode_cache.fits(rt, images)
    assert "decoding every epoch instead" in caplog.text
    forced = dataclasses.replace(rt, cfg=dataclasses.replace(rt.cfg, decode_cache="on"))
    with pytest.raises(ConfigError, match="pass --decode-cache off"):
        decode_cache.fits(forced, images)
    assert decode_cache.fits(rt, 10)
