"""The device pipeline's loader: two threads between the loader workers and the model.

    loader workers --> decode thread  --(2 batches)--> augment thread --(2 batches)--> model
                       (side stream 1)                 (side stream 2)

On a GPU, torchvision's batched nvjpeg decode holds a process-wide lock and
synchronises its stream before and after each call; with one producer thread
doing both, no batch was cropped and resized while the next one decoded. Here
batch i+1 decodes while batch i is augmented and batch i-1 trains, each stage
on its own CUDA stream, ordered by events: the augment stream waits for the
decode that made its images, the model's stream for the augmentation that made
its batch. On the CPU (device=cpu) the same threads run the same code, which
is how it is tested without a GPU.

Either stage's error is raised in the training thread; leaving the loop early
stops both threads (bounded), and the next pass starts from scratch.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader

from dogbreed.train.device_data import Decoded, EncodedBatch, augment_stage, decode_stage

# Augmented batches (N x 3 x 224 x 224 each) waiting for the model.
PREFETCH_BATCHES = 2
# Decoded batches waiting to be augmented: full-size images (a 40 MP photo is 120 MB),
# so one; the overlap needs no more.
DECODED_BATCHES = 1
# A stage that gives nothing for this long has hung: fail instead of waiting forever.
PRODUCER_TIMEOUT_S = 600
_POLL_S = 0.1  # how often a waiting thread looks at the stop flag
_END = object()  # a stage's last item


class StageTimeout(RuntimeError):
    pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put unless stopped first; False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _take(q: queue.Queue, stop: threading.Event, what: str) -> Iterator[Any]:
    """Items from the stage before until its end; its error raised here; bounded waits."""
    while not stop.is_set():
        deadline = time.monotonic() + PRODUCER_TIMEOUT_S
        while True:
            try:
                item = q.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if stop.is_set():
                    return
                if time.monotonic() > deadline:
                    raise StageTimeout(f"{what} gave no batch in {PRODUCER_TIMEOUT_S} s") from None
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class _Stage(threading.Thread):
    """Runs fn over a source on its own CUDA stream; (result, event) items to `out`."""

    def __init__(self, fn: Callable, source: Callable[[], Iterator], out: queue.Queue,
                 stop: threading.Event, device: torch.device) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.fn, self.source, self.out, self.stop, self.device = fn, source, out, stop, device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def run(self) -> None:
        # A new thread starts on GPU 0: under DDP this rank's GPU must be current.
        on_gpu = torch.cuda.device(self.device) if self.stream else contextlib.nullcontext()
        try:
            with on_gpu:
                for item in self.source():
                    if self.stop.is_set():
                        return
                    event = None
                    if self.stream is not None:
                        with torch.cuda.stream(self.stream):
                            result = self.fn(item)
                            event = torch.cuda.Event()
                            event.record(self.stream)
                    else:
                        result = self.fn(item)
                    if not _put(self.out, (result, event), self.stop):
                        return
            _put(self.out, _END, self.stop)
        except BaseException as exc:  # handed on, raised in the training thread
            _put(self.out, exc, self.stop)


def _after(event: torch.cuda.Event | None, tensors: list[torch.Tensor], device) -> None:
    """Make the device's current stream wait for `event` and own `tensors` from now on."""
    if event is None:
        return
    current = torch.cuda.current_stream(device)
    current.wait_event(event)
    for t in tensors:
        t.record_stream(current)  # made on another stream: keep until this one is done


class DeviceLoader:
    """Batches as the training loop takes them, (images, targets, dropped), on the device.

    Wraps a DataLoader of encoded samples; `cpu_decoded` counts the images of
    the last pass that were decoded on the CPU.
    """

    def __init__(
        self, loader: DataLoader, device: torch.device, train: bool, channels_last: bool
    ) -> None:
        self.loader = loader
        self.device = device
        self.train = train
        self.channels_last = channels_last
        self.cpu_decoded = 0

    def __len__(self) -> int:
        return len(self.loader)

    def _decode(self, batch: EncodedBatch) -> Decoded:
        return decode_stage(batch, self.device)

    def _augment(self, item: tuple[Decoded, torch.cuda.Event | None]):
        decoded, event = item
        if event is not None:  # on a GPU: wait for the decode stream's work on these images
            _after(event, decoded.images, self.device)
        return augment_stage(decoded, self.device, self.train, self.channels_last)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        self.cpu_decoded = 0
        decoded: queue.Queue = queue.Queue(maxsize=DECODED_BATCHES)
        ready: queue.Queue = queue.Queue(maxsize=PREFETCH_BATCHES)
        stop = threading.Event()
        batches = iter(self.loader)  # worker processes start here, in the caller's thread
        stages = [
            _Stage(self._decode, lambda: batches, decoded, stop, self.device),
            _Stage(self._augment, lambda: _take(decoded, stop, "decoding"), ready, stop,
                   self.device),
        ]  # fmt: skip
        for stage in stages:
            stage.start()
        try:
            for (images, targets, dropped, cpu_decoded), event in _take(ready, stop, "augmenting"):
                _after(event, [images, targets], self.device)
                self.cpu_decoded += cpu_decoded
                yield images, targets, dropped
        finally:
            stop.set()
            deadline = time.monotonic() + PRODUCER_TIMEOUT_S
            for stage in stages:
                while stage.is_alive() and time.monotonic() < deadline:
                    for q in (decoded, ready):  # unblock a stage on a full queue
                        with contextlib.suppress(queue.Empty):
                            q.get_nowait()
                    stage.join(timeout=_POLL_S)
