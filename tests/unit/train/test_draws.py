"""Augmentation draws keyed by (seed, epoch, image): the same crops and flips whatever
the worker count, persistent workers, resume or the global RNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, DistributedSampler

from dogbreed.train.data import ImageFolderDataset
from dogbreed.train.device_data import EncodedDataset, collate_encoded, sample_crop, sample_flip
from dogbreed.train.distributed import Dist
from dogbreed.train.draws import (
    KeyedSampler,
    global_seed,
    mix,
    sample_crops,
    sample_flips,
    split_key,
)
from dogbreed.train.loop import Runtime, make_loader, set_epoch
from support.train import config


def write_jpegs(folder, n: int) -> list:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        pixels = rng.integers(0, 256, (60 + 7 * i, 90 - 3 * i, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG")
        path = folder / f"{i}.jpg"
        path.write_bytes(buf.getvalue())
        files.append((path, i % 3))
    return files


def boxes_by_target(loader) -> dict[int, tuple]:
    """{sample number: (box, flip)} over one pass; sample number = target."""
    out = {}
    for batch in loader:
        for target, box, flip in zip(batch.targets, batch.boxes, batch.flips, strict=True):
            out[int(target)] = (box, bool(flip))
    return out


def numbered(files) -> list:
    return [(path, i) for i, (path, _) in enumerate(files)]


def encoded_loader(files, workers: int, persistent: bool, epoch: int, base: int = 7):
    ds = EncodedDataset(numbered(files), train=True)
    shuffle = DistributedSampler(ds, 1, 0, shuffle=True, seed=base)
    return DataLoader(
        ds,
        batch_size=3,
        sampler=KeyedSampler(shuffle, base, epoch),
        num_workers=workers,
        persistent_workers=persistent,
        collate_fn=collate_encoded,
    )


def test_draws_do_not_depend_on_workers_persistence_or_resume(tmp_path):
    files = write_jpegs(tmp_path, 8)
    # Epochs 1..3 with two persistent workers, as a run keeps them.
    kept = encoded_loader(files, workers=2, persistent=True, epoch=1)
    seen = []
    for epoch in (1, 2, 3):
        kept.sampler.set_epoch(epoch)
        seen.append(boxes_by_target(kept))
    assert seen[0] != seen[1] != seen[2]  # every epoch draws anew
    # A resumed run: fresh workers (or none) at epoch 3 draw what the kept ones drew.
    torch.manual_seed(12345)  # whatever the global RNG holds
    for workers in (0, 1):
        fresh = encoded_loader(files, workers=workers, persistent=False, epoch=3)
        assert boxes_by_target(fresh) == seen[2]


def test_a_keyed_sample_draws_as_torchvision_does_from_that_seed():
    seed = mix(1, 2, 3)
    g = torch.Generator().manual_seed(seed)
    keyed = (sample_crop(375, 500, g), sample_flip(g))
    with global_seed(seed):
        plain = (sample_crop(375, 500), sample_flip())
    assert keyed == plain


def test_the_cpu_pipeline_draws_per_key_and_leaves_the_global_rng(tmp_path):
    files = write_jpegs(tmp_path, 2)
    ds = ImageFolderDataset(files, train=True)
    state = torch.get_rng_state()
    first = ds[(1, 99)][0]
    assert torch.equal(torch.get_rng_state(), state)  # with 0 workers this is the trainer's
    torch.manual_seed(5)
    assert torch.equal(ds[(1, 99)][0], first)
    assert not torch.equal(ds[(1, 100)][0], first)


def test_set_epoch_moves_a_made_loader_to_the_next_shuffle_and_draws(tmp_path):
    files = write_jpegs(tmp_path, 6)
    cfg = config(tmp_path, tmp_path / "run", pipeline="device", batch_size=2, seed=3)
    loader = make_loader(Runtime(cfg, Dist(), torch.device("cpu")), files, True, 0)
    keys = list(loader.loader.sampler)
    set_epoch(loader, 1)
    assert list(loader.loader.sampler) != keys
    set_epoch(loader, 0)
    assert list(loader.loader.sampler) == keys


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 2**62), min_size=1, max_size=4),
    st.lists(st.integers(0, 2**62), min_size=1, max_size=4),
)
def test_mix_is_a_positive_63_bit_seed_that_tells_its_inputs_apart(a, b):
    assert 0 <= mix(*a) < 2**63
    assert mix(*a) == mix(*a)
    if a != b:
        assert mix(*a) != mix(*b)


@pytest.mark.parametrize("key,expected", [(4, (4, None)), ((4, 9), (4, 9))])
def test_split_key(key, expected):
    assert split_key(key) == expected


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.integers(1, 3000)), min_size=1, max_size=20))
def test_an_epochs_crops_lie_inside_their_images(sizes):
    heights = torch.tensor([h for h, _ in sizes])
    widths = torch.tensor([w for _, w in sizes])
    boxes = sample_crops(heights, widths, torch.Generator().manual_seed(len(sizes)))
    top, left, h, w = boxes.unbind(1)
    assert boxes.dtype == torch.long and boxes.shape == (len(sizes), 4)
    assert bool((h > 0).all() and (w > 0).all() and (top >= 0).all() and (left >= 0).all())
    assert bool((top + h <= heights).all() and (left + w <= widths).all())


def test_an_epochs_crops_follow_torchvisions_distribution():
    n = 4000
    batch = sample_crops(
        torch.full((n,), 375), torch.full((n,), 500), torch.Generator().manual_seed(0)
    )
    torch.manual_seed(0)
    single = torch.tensor([sample_crop(375, 500) for _ in range(n)])
    for boxes in (batch, single):
        assert boxes[:, 2].max() <= 375 and boxes[:, 3].max() <= 500

    def stats(b):
        area = (b[:, 2] * b[:, 3]).double() / (375 * 500)
        aspect = b[:, 3].double() / b[:, 2]
        centre = (b[:, 1] + b[:, 3] / 2).double() / 500
        return area.mean(), area.std(), aspect.log().mean(), centre.mean()

    for ours, theirs in zip(stats(batch), stats(single), strict=True):
        assert abs(float(ours - theirs)) < 0.02, (ours, theirs)
    flips = sample_flips(n, torch.Generator().manual_seed(1)).double().mean()
    assert 0.45 < float(flips) < 0.55


@pytest.mark.parametrize("size", [(1, 10**6), (10**6, 1), (1, 1)])
def test_where_no_draw_fits_the_crop_is_torchvisions_central_one(size):
    height, width = size
    got = sample_crops(torch.tensor([height]), torch.tensor([width]), torch.Generator())
    assert tuple(got[0].tolist()) == sample_crop(height, width)
