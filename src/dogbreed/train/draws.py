"""Augmentation draws keyed by (run seed, epoch, image), not by a worker's RNG state.

A loader worker that draws crops from its own RNG makes epoch e's augmentation
depend on every draw before it in that worker. Persistent workers (kept from one
epoch to the next, so that eight worker processes are not rebuilt inside every
timed epoch) then break resume: a job resumed at epoch e starts fresh workers and
draws other crops than the run it continues. Here the sampler, which runs in the
training process, hands each index its own seed; a worker seeds a generator (or,
for torchvision's transforms, its global RNG for that one sample) from it. Through
make_loader, image i of epoch e gets the same crop and flip whatever the worker
count, persistence, resume or number of ranks. (The decode cache draws a whole
epoch at once from (seed, epoch), and the feature bank per rank and view: the
same guarantees within each, other crops than the loader's.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler

# A key as a dataset receives it: an index alone (draws from the global RNG, as
# torchvision does) or (index, seed).
Key = int | tuple[int, int]
_MIX = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's constants
_MASK = 2**63 - 1  # torch seeds are taken as signed 64-bit: stay positive
SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults
RATIO = (3.0 / 4.0, 4.0 / 3.0)


def mix(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (splitmix64 over each part in turn)."""
    h = 0
    for part in parts:
        h = (h + _MIX[0] + part) & (2**64 - 1)
        h = ((h ^ (h >> 30)) * _MIX[1]) & (2**64 - 1)
        h = ((h ^ (h >> 27)) * _MIX[2]) & (2**64 - 1)
        h ^= h >> 31
    return h & _MASK


def split_key(key: Key) -> tuple[int, int | None]:
    """(index, seed or None) from what a sampler yielded."""
    if isinstance(key, tuple):
        return key
    return key, None


def generator(seed: int | None) -> torch.Generator | None:
    """A CPU generator for one sample's draws; None (the global RNG) without a seed."""
    return None if seed is None else torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def global_seed(seed: int | None):
    """Seed the global RNG for one sample (torchvision's transforms draw from it) and put
    the caller's state back after: with 0 workers this runs in the training process."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class KeyedSampler(Sampler[tuple[int, int]]):
    """(index, seed) in the inner sampler's order; the seed is mix(base, epoch, index)."""

    def __init__(self, inner: DistributedSampler | Sequence[int], base: int, epoch: int = 0):
        self.inner, self.base = inner, base
        self.set_epoch(epoch)

    def set_epoch(self, epoch: int) -> None:
        """A new shuffle (the inner sampler's) and new draws for every image."""
        self.epoch = epoch
        if isinstance(self.inner, DistributedSampler):
            self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.inner:
            yield i, mix(self.base, self.epoch, i)

    def __len__(self) -> int:
        return len(self.inner)


def sample_crops(
    heights: torch.Tensor, widths: torch.Tensor, g: torch.Generator, scale=SCALE, ratio=RATIO
) -> torch.Tensor:
    """(N, 4) int64 (top, left, h, w): RandomResizedCrop.get_params for N images at once.

    The same distribution as torchvision's (up to 10 draws of area and log-aspect,
    the first that fits, else the central crop), drawn for a whole epoch in a few
    tensor ops rather than ~30 us of Python per image on the training thread;
    heights and widths are (N,) int64 of the upright images.
    """
    n = len(heights)
    h_in, w_in = heights.double().unsqueeze(1), widths.double().unsqueeze(1)  # (N, 1)
    area = h_in * w_in * torch.empty(n, 10, dtype=torch.float64).uniform_(*scale, generator=g)
    log_ratio = torch.log(torch.tensor(ratio, dtype=torch.float64))
    aspect = torch.exp(torch.empty(n, 10, dtype=torch.float64).uniform_(*log_ratio, generator=g))
    w = torch.round(torch.sqrt(area * aspect))  # (N, 10) candidates
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= w_in) & (h > 0) & (h <= h_in)
    first = fits.long().argmax(1, keepdim=True)  # the first candidate that fits
    w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    # No fit in 10 draws: torchvision's central crop at the nearest allowed aspect.
    miss = ~fits.any(1)
    h_in, w_in = h_in[:, 0], w_in[:, 0]
    in_ratio = w_in / h_in
    fall_w = torch.where(in_ratio > max(ratio), torch.round(h_in * max(ratio)), w_in)
    fall_h = torch.where(in_ratio < min(ratio), torch.round(w_in / min(ratio)), h_in)
    w, h = torch.where(miss, fall_w, w), torch.where(miss, fall_h, h)
    u = torch.rand(n, 2, dtype=torch.float64, generator=g)
    top = torch.where(miss, torch.div(h_in - h, 2, rounding_mode="floor"),
                      torch.floor(u[:, 0] * (h_in - h + 1)))  # fmt: skip
    left = torch.where(miss, torch.div(w_in - w, 2, rounding_mode="floor"),
                       torch.floor(u[:, 1] * (w_in - w + 1)))  # fmt: skip
    return torch.stack([top, left, h, w], 1).long()


def sample_flips(n: int, g: torch.Generator) -> torch.Tensor:
    """(N,) bool: RandomHorizontalFlip's p=0.5 for N images at once."""
    return torch.rand(n, generator=g) < 0.5
