"""The per-epoch machinery of training: device and precision, loaders, steps, evaluation.

Shapes: a batch is images (N, 3, 224, 224) in the configured memory format,
targets (N,) class indices, and the number of images in it that could not be
decoded; logits are (N, C) for C classes. Every figure a function returns is
summed over the ranks of a distributed run. The orchestration of a whole run
(resume, epochs, checkpoints, reports) is in train.run.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dogbreed.core.errors import DataError
from dogbreed.train import distributed
from dogbreed.train.config import TrainConfig
from dogbreed.train.data import ImageFolderDataset, collate_skipping
from dogbreed.train.device import autocast
from dogbreed.train.device_data import EncodedDataset, collate_encoded
from dogbreed.train.device_loader import DeviceLoader
from dogbreed.train.distributed import Dist
from dogbreed.train.draws import KeyedSampler
from dogbreed.train.models import Classifier, build_model, param_groups

Loader = DataLoader | DeviceLoader

# The progress bar reads the loss (a host-device sync) once per this many steps.
PROGRESS_EVERY = 20


@dataclass(frozen=True)
class Runtime:
    """What every step reads: the config resolved for the device, the process group, the device."""

    cfg: TrainConfig
    dist: Dist
    device: torch.device


@dataclass
class EvalResult:
    loss: float
    acc: float
    images: int
    dropped: int
    confusion: np.ndarray = field(repr=False)  # (C, C): rows true class, columns predicted


@dataclass
class RunState:
    """What a checkpoint carries besides the weights."""

    epoch: int = 0  # epochs finished
    best_acc: float = -1.0
    best_epoch: int = 0
    since_best: int = 0
    history: list[dict] = field(default_factory=list)
    dropped_images: int = 0
    seen_images: int = 0


@dataclass
class Epoch:
    """One finished epoch, its figures summed over ranks."""

    number: int
    train_loss: float
    images: int  # training images used
    dropped: int  # training images that could not be decoded
    cpu_decoded: int  # device pipeline: training images decoded on the CPU, not by nvjpeg
    seconds: float
    val: EvalResult

    def row(self) -> dict[str, Any]:
        """The figures of the metric line, in its order."""
        return {
            "epoch": self.number,
            "train_loss": self.train_loss,
            "val_loss": self.val.loss,
            "val_acc": self.val.acc,
            "images_per_s": round(self.images / max(self.seconds, 1e-9), 1),
        }


# --- Data -----------------------------------------------------------------------------


def make_loader(
    rt: Runtime,
    samples: list,
    train: bool,
    workers: int,
    epoch: int = 0,
    seed: int | None = None,
    persistent: bool = False,
) -> Loader:
    """Batches of (images, targets, dropped) by the configured pipeline.

    A training loader hands every index its own augmentation seed (train.draws),
    from `seed` (the run's by default), the epoch and the index; `persistent`
    keeps its workers from one epoch to the next (move on with set_epoch).
    """
    cfg, d = rt.cfg, rt.dist
    on_device = cfg.pipeline == "device"
    if on_device:  # encoded JPEG bytes here, decoded and augmented on the GPU by DeviceLoader
        dataset = EncodedDataset(samples, train=train)
    else:
        dataset = ImageFolderDataset(samples, train=train)
    sampler: KeyedSampler | list[int]
    if train:
        shuffle = DistributedSampler(
            dataset, d.world_size, d.rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
        # A new shuffle every epoch, the same one on every rank; new draws per image.
        sampler = KeyedSampler(shuffle, cfg.seed if seed is None else seed, epoch)
    else:
        # Exact sharding for evaluation: every image counted once across ranks.
        sampler = list(range(d.rank, len(dataset), d.world_size))
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_encoded if on_device else collate_skipping,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=persistent and workers > 0,
        drop_last=False,
        # Worker seeds from a generator of the loader's own, not the run's RNG: a kept
        # loader draws once, where one per epoch drew every epoch, and a resumed run
        # must leave the run's RNG where the uninterrupted one did.
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return DeviceLoader(loader, rt.device, train, cfg.channels_last) if on_device else loader


def set_epoch(loader: Loader, epoch: int) -> None:
    """Point a training loader at another epoch (shuffle and draws): make_loader's, or
    any loader with its own set_epoch (train.decode_cache)."""
    inner = loader.loader if isinstance(loader, DeviceLoader) else loader
    getattr(inner, "sampler", inner).set_epoch(epoch)


def show_progress(d: Dist) -> bool:
    return d.is_main and sys.stderr.isatty()


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=True, memory_format=fmt)


# --- Model and steps ------------------------------------------------------------------


def build_for_training(
    cfg: TrainConfig, classes: int, device: torch.device, frozen: bool
) -> tuple[Classifier, torch.optim.Optimizer]:
    """The model on its device in its memory format, and AdamW over what it trains."""
    model = build_model(cfg.arch, classes, cfg.weights, frozen=frozen).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # A random backbone learns at the head's rate; a pretrained one more gently.
    backbone_scale = cfg.backbone_lr_scale if cfg.weights != "none" else 1.0
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.lr, backbone_scale), weight_decay=cfg.weight_decay
    )
    return model, optimizer


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    rt: Runtime,
) -> torch.Tensor:
    """One optimiser step on a batch already on the device; returns the loss (a scalar)."""
    with autocast(rt.device, rt.cfg.precision):
        loss = nn.functional.cross_entropy(model(images), targets)  # logits (N, C)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_one_epoch(
    rt: Runtime, model: nn.Module, loader: Loader, optimizer: torch.optim.Optimizer, epoch: int
) -> tuple[float, int, int, float]:
    """(mean loss, images used, images dropped, seconds), summed over ranks."""
    model.train()
    # Summed on the device: no host sync per batch (the bar's loss.item() every
    # PROGRESS_EVERY steps aside, and only on a terminal).
    totals = torch.zeros(3, dtype=torch.float64, device=rt.device)  # loss sum, images, dropped
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not show_progress(rt.dist),
        leave=False,
        dynamic_ncols=True,
    )
    shown = show_progress(rt.dist)
    for step, (images, targets, dropped) in enumerate(bar):
        totals[2] += dropped
        if len(targets) == 0:  # every image of the batch unreadable
            continue
        images = to_device(images, rt.device, rt.cfg.channels_last)
        targets = targets.to(rt.device, non_blocking=True)
        loss = train_step(model, images, targets, optimizer, rt)
        totals[0] += loss.detach().double() * len(targets)
        totals[1] += len(targets)
        if shown and step % PROGRESS_EVERY == 0:  # .item() waits for the device
            bar.set_postfix(loss=f"{loss.item():.3f}")
    # The slowest rank sets the pace of a synchronous run.
    seconds = distributed.all_max(rt.dist, time.perf_counter() - start)
    loss_sum, images_used, dropped_total = distributed.all_sum(rt.dist, totals).tolist()
    return loss_sum / max(images_used, 1), int(images_used), int(dropped_total), seconds


@torch.no_grad()
def evaluate(rt: Runtime, model: nn.Module, loader: Loader, classes: int) -> EvalResult:
    """Loss, accuracy and confusion matrix over the loader's images, all ranks together."""
    model.eval()

    def batches() -> Iterator[tuple[torch.Tensor | None, torch.Tensor | None, int]]:
        for images, targets, dropped in loader:
            if len(targets) == 0:
                yield None, None, dropped
                continue
            images = to_device(images, rt.device, rt.cfg.channels_last)
            with autocast(rt.device, rt.cfg.precision):
                logits = model(images).float()  # (N, C), fp32 for the loss and argmax
            yield logits, targets.to(rt.device, non_blocking=True), dropped

    return score(rt, batches(), classes)


@torch.no_grad()
def score(
    rt: Runtime,
    batches: Iterable[tuple[torch.Tensor | None, torch.Tensor | None, int]],
    classes: int,
) -> EvalResult:
    """EvalResult of (logits (N, C) fp32 or None, targets (N,), dropped) batches, summed
    over ranks: the one scoring of every evaluation, from images or from stored features."""
    criterion = nn.CrossEntropyLoss(reduction="sum")
    confusion = torch.zeros(classes, classes, dtype=torch.float64, device=rt.device)  # (C, C)
    totals = torch.zeros(2, dtype=torch.float64, device=rt.device)  # loss sum, dropped
    for logits, targets, dropped in batches:
        totals[1] += dropped
        if logits is None or targets is None:
            continue
        totals[0] += criterion(logits, targets).double()
        preds = logits.argmax(dim=1)  # (N,)
        # confusion[true, predicted] += 1 for each image, repeated pairs included.
        confusion.index_put_(
            (targets, preds), torch.ones_like(targets, dtype=torch.float64), accumulate=True
        )
    distributed.all_sum(rt.dist, confusion)
    distributed.all_sum(rt.dist, totals)
    matrix = confusion.cpu().numpy().astype(np.int64)
    n = int(matrix.sum())
    return EvalResult(
        loss=float(totals[0]) / max(n, 1),
        acc=float(np.trace(matrix)) / max(n, 1),
        images=n,
        dropped=int(totals[1]),
        confusion=matrix,
    )


# --- Checks and reporting -------------------------------------------------------------


def params_digest(model: nn.Module) -> str:
    """sha256 of all parameters and buffers: equal on every rank of a correct DDP run."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def record_epoch(state: RunState, epoch: Epoch) -> bool:
    """Fold a finished epoch into the run state; whether it is the best so far."""
    state.epoch = epoch.number
    state.seen_images += epoch.images + epoch.dropped
    state.dropped_images += epoch.dropped
    improved = epoch.val.acc > state.best_acc
    if improved:
        state.best_acc, state.best_epoch, state.since_best = epoch.val.acc, epoch.number, 0
    else:
        state.since_best += 1
    state.history.append(
        {**epoch.row(), "skipped_images": epoch.dropped, "cpu_decoded_images": epoch.cpu_decoded}
    )
    return improved


def check_bad_share(state: RunState, limit: float) -> None:
    if state.seen_images and state.dropped_images / state.seen_images > limit:
        raise DataError(
            f"{state.dropped_images} of {state.seen_images} training images could not be decoded "
            f"({state.dropped_images / state.seen_images:.1%}, over --max-bad-fraction {limit})"
        )


def metric_line(values: dict[str, Any]) -> str:
    """'epoch=3 train_loss=0.4100 ... images_per_s=812.5' for SageMaker's metric regexes."""
    return " ".join(
        f"{k}={v:.1f}"
        if k == "images_per_s"
        else f"{k}={v:.4f}"
        if isinstance(v, float)
        else f"{k}={v}"
        for k, v in values.items()
    )
