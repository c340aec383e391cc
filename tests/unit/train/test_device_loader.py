"""The device pipeline's two threads: decode and augmentation overlap, errors of either
reach the training thread, and leaving early stops both."""

from __future__ import annotations

import threading

import pytest
import torch

from dogbreed.train import device_loader
from dogbreed.train.device_loader import DeviceLoader

CPU = torch.device("cpu")
WAIT_S = 10  # far longer than any step here takes; a stage that never comes fails the test


class Batches:
    """A stand-in for the DataLoader: n batches, numbered."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return iter(range(self.n))


def test_the_next_batch_decodes_while_this_one_is_augmented(monkeypatch):
    decoding = [threading.Event() for _ in range(4)]
    overlapped = []

    def decode(batch, device):
        decoding[batch].set()
        return batch

    def augment(batch, device, train, channels_last):
        if batch + 1 < len(decoding):  # with one thread doing both, this would never come
            overlapped.append(decoding[batch + 1].wait(WAIT_S))
        return torch.zeros(1, 3, 2, 2), torch.tensor([batch]), 0, 0

    monkeypatch.setattr(device_loader, "decode_stage", decode)
    monkeypatch.setattr(device_loader, "augment_stage", augment)
    got = [int(t) for _, t, _ in DeviceLoader(Batches(4), CPU, True, False)]
    assert got == [0, 1, 2, 3] and overlapped == [True, True, True]


@pytest.mark.parametrize("stage", ["decode_stage", "augment_stage"])
def test_an_error_in_either_stage_is_raised_in_the_training_thread(monkeypatch, stage):
    def broken(batch, *args):
        if batch == 2:
            raise ValueError(f"{stage} failed")
        return batch if stage == "decode_stage" else (torch.zeros(1), torch.tensor([batch]), 0, 0)

    monkeypatch.setattr(device_loader, "decode_stage", lambda batch, device: batch)
    monkeypatch.setattr(
        device_loader, "augment_stage", lambda b, *a: (torch.zeros(1), torch.tensor([b]), 0, 0)
    )
    monkeypatch.setattr(device_loader, stage, broken)
    seen = []
    with pytest.raises(ValueError, match=f"{stage} failed"):
        for _, targets, _ in DeviceLoader(Batches(5), CPU, True, False):
            seen.append(targets)
    assert len(seen) <= 2


def test_leaving_early_stops_both_threads(monkeypatch):
    monkeypatch.setattr(device_loader, "decode_stage", lambda batch, device: batch)
    monkeypatch.setattr(
        device_loader, "augment_stage", lambda b, *a: (torch.zeros(1), torch.tensor([b]), 0, 0)
    )
    before = threading.active_count()
    loader = DeviceLoader(Batches(50), CPU, True, False)
    for n, _ in enumerate(loader):
        if n == 1:
            break
    assert threading.active_count() == before  # both stages joined
    assert len(list(loader)) == 50  # and a new pass starts from scratch


def test_a_stage_that_hangs_is_an_error_not_a_wait_forever(monkeypatch):
    release = threading.Event()

    def hang(batch, device):
        release.wait(WAIT_S)
        return batch

    monkeypatch.setattr(device_loader, "PRODUCER_TIMEOUT_S", 0.3)
    monkeypatch.setattr(device_loader, "decode_stage", hang)
    try:
        with pytest.raises(device_loader.StageTimeout, match=r"gave no batch in 0\.3 s"):
            list(DeviceLoader(Batches(2), CPU, True, False))
    finally:
        release.set()
