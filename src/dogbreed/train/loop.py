"""The training loop: one code path for SageMaker, an EC2/Docker host and a laptop.

Per epoch it prints a metric line SageMaker's MetricDefinitions can read:
    epoch=3 train_loss=0.4100 val_loss=0.5200 val_acc=0.8740 images_per_s=812.5
keeps the best epoch by val_acc, and checkpoints so that a restarted run resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from dogbreed.core.errors import ConfigError, DataError
from dogbreed.core.hardware import bf16_native_cpu
from dogbreed.core.modeldir import write_json
from dogbreed.train import checkpoint, distributed
from dogbreed.train.config import TrainConfig
from dogbreed.train.data import (
    ImageFolderDataset,
    Splits,
    collate_skipping,
    display_label,
    load_splits,
)
from dogbreed.train.device_data import DeviceLoader, EncodedDataset, collate_encoded
from dogbreed.train.distributed import Dist
from dogbreed.train.export import write_model_dir
from dogbreed.train.models import Classifier, build_model, param_groups
from dogbreed.train.monitor import ResourceMonitor
from dogbreed.train.quantize import export_int8
from dogbreed.train.report import confused_pairs, plot_curves, plot_resources

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    loss: float
    acc: float
    images: int
    dropped: int
    confusion: np.ndarray = field(repr=False)


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


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


# Defaults that depend on the device: per-process batch size, and the head's
# learning rate at BASE_BATCH, scaled by sqrt(global batch / BASE_BATCH), the
# square-root rule for Adam-type optimisers.
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256
BASE_LR = 1e-3
BASE_BATCH = 32


def resolve_for_device(cfg: TrainConfig, device: torch.device, world_size: int) -> TrainConfig:
    """Fill in what depends on the device: batch size, learning rate, precision, pipeline."""
    batch = cfg.batch_size or (GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE)
    lr = cfg.lr or BASE_LR * math.sqrt(batch * world_size / BASE_BATCH)
    precision = cfg.precision
    if precision == "auto":
        precision = "bf16" if native_bf16(device) else "fp32"
    pipeline = cfg.pipeline
    if pipeline == "auto":
        pipeline = "device" if device.type == "cuda" else "loader"
    return dataclasses.replace(cfg, batch_size=batch, lr=lr, precision=precision, pipeline=pipeline)


def check_compiler(cfg: TrainConfig) -> None:
    """torch.compile builds C code at run time (Inductor, Triton): fail now, not at step 1."""
    if cfg.compile and not (shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")):
        raise ConfigError(
            "--compile needs a C compiler at run time (install gcc, or set CC); "
            "or train without --compile"
        )


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 in hardware (emulated bf16 is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bf16_native_cpu()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def default_workers(device: torch.device) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    # On CPU the model needs the cores too; leave it at least half of them.
    return min(8, cores if device.type == "cuda" else max(1, cores // 2))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_loader(
    samples: list,
    train: bool,
    cfg: TrainConfig,
    d: Dist,
    device: torch.device,
    workers: int,
    epoch: int = 0,
) -> DataLoader | DeviceLoader:
    """Batches of (images, targets, dropped) by the configured pipeline."""
    on_device = cfg.pipeline == "device"
    if on_device:
        dataset = EncodedDataset(samples, train=train)
    else:
        dataset = ImageFolderDataset(samples, train=train)
    if train:
        sampler = DistributedSampler(
            dataset, d.world_size, d.rank, shuffle=True, seed=cfg.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
    else:
        # Exact sharding for evaluation: every image counted once across ranks.
        sampler = list(range(d.rank, len(dataset), d.world_size))
    loader = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_encoded if on_device else collate_skipping,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        drop_last=False,
    )
    return DeviceLoader(loader, device, train, cfg.channels_last) if on_device else loader


def show_progress(d: Dist) -> bool:
    return d.is_main and sys.stderr.isatty()


def to_device(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return images.to(device, non_blocking=True, memory_format=fmt)


def build_for_training(
    cfg: TrainConfig, classes: int, device: torch.device, frozen: bool
) -> tuple[Classifier, torch.optim.Optimizer]:
    """The model on its device in its memory format, and AdamW over what it trains."""
    model = build_model(cfg.arch, classes, cfg.weights, frozen=frozen).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
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
    device: torch.device,
    cfg: TrainConfig,
) -> torch.Tensor:
    """One optimiser step on a batch already on the device; returns the loss."""
    with autocast(device, cfg.precision):
        loss = nn.functional.cross_entropy(model(images), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader | DeviceLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    d: Dist,
    epoch: int,
    cfg: TrainConfig,
) -> tuple[float, int, int, float]:
    """(mean loss, images used, images dropped, seconds), summed over ranks."""
    model.train()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, images, dropped
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not show_progress(d),
        leave=False,
        dynamic_ncols=True,
    )
    for images, targets, dropped in bar:
        totals[2] += dropped
        if len(targets) == 0:
            continue
        images = to_device(images, device, cfg.channels_last)
        targets = targets.to(device, non_blocking=True)
        loss = train_step(model, images, targets, optimizer, device, cfg)
        totals[0] += loss.detach().double() * len(targets)
        totals[1] += len(targets)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    seconds = distributed.all_max(d, time.perf_counter() - start)
    loss_sum, images_used, dropped_total = distributed.all_sum(d, totals).tolist()
    return loss_sum / max(images_used, 1), int(images_used), int(dropped_total), seconds


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader | DeviceLoader,
    classes: int,
    device: torch.device,
    d: Dist,
    cfg: TrainConfig,
) -> EvalResult:
    model.eval()
    criterion = nn.CrossEntropyLoss(reduction="sum")
    confusion = torch.zeros(classes, classes, dtype=torch.float64, device=device)
    totals = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, dropped
    for images, targets, dropped in loader:
        totals[1] += dropped
        if len(targets) == 0:
            continue
        images = to_device(images, device, cfg.channels_last)
        targets = targets.to(device, non_blocking=True)
        with autocast(device, cfg.precision):
            logits = model(images).float()
        totals[0] += criterion(logits, targets).double()
        preds = logits.argmax(dim=1)
        confusion.index_put_(
            (targets, preds), torch.ones_like(targets, dtype=torch.float64), accumulate=True
        )
    distributed.all_sum(d, confusion)
    distributed.all_sum(d, totals)
    matrix = confusion.cpu().numpy().astype(np.int64)
    n = int(matrix.sum())
    return EvalResult(
        loss=float(totals[0]) / max(n, 1),
        acc=float(np.trace(matrix)) / max(n, 1),
        images=n,
        dropped=int(totals[1]),
        confusion=matrix,
    )


def params_digest(model: nn.Module) -> str:
    """sha256 of all parameters and buffers: equal on every rank of a correct DDP run."""
    h = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def check_bad_share(state: RunState, limit: float) -> None:
    if state.seen_images and state.dropped_images / state.seen_images > limit:
        raise DataError(
            f"{state.dropped_images} of {state.seen_images} training images could not be decoded "
            f"({state.dropped_images / state.seen_images:.1%}, over --max-bad-fraction {limit})"
        )


def restore(
    cfg: TrainConfig, d: Dist, model: Classifier, optimizer, scheduler, classes: list[str]
) -> RunState:
    """Resume from the latest checkpoint (read by rank 0, sent to the others)."""
    ckpt = checkpoint.load(cfg.checkpoint_dir / checkpoint.LAST) if d.is_main else None
    ckpt = distributed.broadcast(d, ckpt)
    if ckpt is None:
        return RunState()
    if ckpt["arch"] != cfg.arch or ckpt["classes"] != classes:
        raise ConfigError(
            f"checkpoint in {cfg.checkpoint_dir} is for another run ({ckpt['arch']}, "
            f"{len(ckpt['classes'])} classes); empty that directory or pass another "
            "--checkpoint-dir"
        )
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    checkpoint.set_rng_state(ckpt["rng"])
    state = RunState(**ckpt["state"])
    log.info("resumed from %s after epoch %d", cfg.checkpoint_dir / checkpoint.LAST, state.epoch)
    return state


def save_checkpoint(
    cfg: TrainConfig,
    model: Classifier,
    optimizer,
    scheduler,
    state: RunState,
    classes: list[str],
    improved: bool,
) -> None:
    payload = {
        "arch": cfg.arch,
        "classes": classes,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": checkpoint.rng_state(),
        "state": state.__dict__,
    }
    if improved:
        checkpoint.save(
            cfg.checkpoint_dir / checkpoint.BEST, {"model": payload["model"], "epoch": state.epoch}
        )
    checkpoint.save(cfg.checkpoint_dir / checkpoint.LAST, payload)


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


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate, and (rank 0) write every artifact; returns the final metrics."""
    d = distributed.setup(pick_device(cfg.device, 0).type)
    try:
        return _run(cfg, d)
    finally:
        distributed.teardown(d)


def _run(cfg: TrainConfig, d: Dist) -> dict[str, Any]:
    device = pick_device(cfg.device, d.local_rank)
    cfg = resolve_for_device(cfg, device, d.world_size)
    check_compiler(cfg)
    seed_everything(cfg.seed)
    splits = load_splits(cfg.train_dir, cfg.valid_dir, cfg.test_dir)
    classes = splits.classes
    frozen = not cfg.unfreeze and cfg.weights != "none"
    if not cfg.unfreeze and cfg.weights == "none" and d.is_main:
        log.info("--weights none: a random backbone is not worth freezing; training all of it")
    model, optimizer = build_for_training(cfg, len(classes), device, frozen)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    state = restore(cfg, d, model, optimizer, scheduler, classes)
    model.speed_up_frozen_backbone(device, cfg.precision == "bf16", cfg.compile)
    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    if d.is_main:
        log.info(
            "training %s (%s backbone) on %d classes: %d train / %d valid / %d test images, "
            "device %s, world size %d, batch %d, lr %.3g, %s, %s pipeline, %d loader workers",
            cfg.arch,
            "frozen" if frozen else "trained",
            len(classes),
            len(splits.train),
            len(splits.valid),
            len(splits.test),
            device,
            d.world_size,
            cfg.batch_size,
            cfg.lr,
            cfg.precision,
            cfg.pipeline,
            workers,
        )
        for path in (cfg.model_dir, cfg.output_dir, cfg.checkpoint_dir):
            path.mkdir(parents=True, exist_ok=True)
        write_json(cfg.output_dir / "config.json", cfg.to_json())

    wrapped: nn.Module = model
    if d.enabled:
        wrapped = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile and not frozen:  # a frozen one compiled its backbone above
        wrapped = torch.compile(wrapped)
    valid_loader = make_loader(splits.valid, False, cfg, d, device, workers)
    with ResourceMonitor() if d.is_main else contextlib.nullcontext() as monitor:
        _epochs(
            cfg,
            d,
            wrapped,
            model,
            optimizer,
            scheduler,
            state,
            splits,
            valid_loader,
            device,
            workers,
        )
        best = checkpoint.load(cfg.checkpoint_dir / checkpoint.BEST) if d.is_main else None
        best = distributed.broadcast(d, best)
        if best is not None:
            model.load_state_dict(best["model"])
        results = _finish(cfg, d, model, state, splits, device, workers)
    log.info("rank=%d world_size=%d params_sha256=%s", d.rank, d.world_size, params_digest(model))
    if d.is_main:
        _write_outputs(cfg, model, state, splits, results, monitor)
    distributed.barrier(d)
    return results


def _epochs(
    cfg, d, wrapped, model, optimizer, scheduler, state, splits, valid_loader, device, workers
) -> None:
    classes = splits.classes
    while state.epoch < cfg.epochs:
        if cfg.patience and state.since_best >= cfg.patience:
            if d.is_main:
                log.info("early stop: no better val_acc for %d epochs", state.since_best)
            break
        epoch = state.epoch + 1
        loader = make_loader(splits.train, True, cfg, d, device, workers, epoch)
        train_loss, used, dropped, seconds = train_one_epoch(
            wrapped, loader, optimizer, device, d, epoch, cfg
        )
        cpu_decoded = int(
            distributed.all_sum(d, torch.tensor([getattr(loader, "cpu_decoded", 0)], device=device))
        )
        scheduler.step()
        val = evaluate(wrapped, valid_loader, len(classes), device, d, cfg)
        state.epoch = epoch
        state.seen_images += used + dropped
        state.dropped_images += dropped
        improved = val.acc > state.best_acc
        if improved:
            state.best_acc, state.best_epoch, state.since_best = val.acc, epoch, 0
        else:
            state.since_best += 1
        row = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val.loss,
            "val_acc": val.acc,
            "images_per_s": round(used / max(seconds, 1e-9), 1),
        }
        state.history.append({**row, "skipped_images": dropped, "cpu_decoded_images": cpu_decoded})
        if d.is_main:  # checkpoint first: a logged epoch is always a resumable one
            save_checkpoint(cfg, model, optimizer, scheduler, state, classes, improved)
            print(metric_line(row), flush=True)
            if dropped:
                log.warning("epoch %d: skipped %d unreadable training images", epoch, dropped)
            if cpu_decoded and device.type == "cuda":
                log.info(
                    "epoch %d: %d training images decoded on the CPU (not a JPEG nvjpeg takes)",
                    epoch,
                    cpu_decoded,
                )
        distributed.barrier(d)
        check_bad_share(state, cfg.max_bad_fraction)


def _finish(cfg, d, model, state, splits: Splits, device, workers) -> dict[str, Any]:
    classes = splits.classes
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_acc,
        "epochs_run": state.epoch,
        "skipped_images": state.history[-1]["skipped_images"] if state.history else 0,
    }
    if splits.test:
        test_loader = make_loader(splits.test, False, cfg, d, device, workers)
        test = evaluate(model, test_loader, len(classes), device, d, cfg)
        results.update(test_loss=test.loss, test_acc=test.acc, test_images=test.images)
        results["confusion"] = test.confusion
        if d.is_main:
            print(metric_line({"test_loss": test.loss, "test_acc": test.acc}), flush=True)
    return results


def _write_outputs(
    cfg: TrainConfig,
    model: Classifier,
    state: RunState,
    splits: Splits,
    results: dict[str, Any],
    monitor: ResourceMonitor | None,
) -> None:
    labels = [display_label(c) for c in splits.classes]
    confusion = results.pop("confusion", None)
    metrics = {**results, "history": state.history}
    write_json(cfg.output_dir / "metrics.json", metrics)
    if state.history:
        plot_curves(state.history, cfg.output_dir / "training_curves.png")
    if confusion is not None:
        write_json(
            cfg.output_dir / "confusions.json",
            {
                "split": "test",
                "labels": labels,
                "most_confused": confused_pairs(confusion, labels),
                "matrix": confusion.tolist(),
            },
        )
    if monitor and monitor.rows:
        monitor.write_csv(cfg.output_dir / "resources.csv")
        plot_resources(monitor.rows, cfg.output_dir / "resources.png")
    summary = {k: v for k, v in results.items() if k != "history"}
    write_model_dir(model.cpu(), cfg.model_dir, splits.classes, cfg.arch, summary, cfg.to_json())
    if cfg.int8:
        export_int8(cfg.model_dir, splits.train, splits.valid, cfg.int8_max_drop, cfg.seed)
    log.info("model written to %s; reports in %s", cfg.model_dir, cfg.output_dir)
