"""A training run from start to end: one code path for SageMaker, an EC2/Docker host and a laptop.

Per epoch it prints a metric line SageMaker's MetricDefinitions can read:
    epoch=3 train_loss=0.4100 val_loss=0.5200 val_acc=0.8740 images_per_s=812.5
keeps the best epoch by val_acc, and checkpoints so that a restarted run resumes.
The per-epoch machinery (loaders, steps, evaluation) is in train.loop.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from dogbreed.core.errors import ConfigError
from dogbreed.core.modeldir import (
    CONFIG_REPORT,
    CONFUSIONS_REPORT,
    CURVES_PLOT,
    METRICS_REPORT,
    RESOURCES_CSV,
    RESOURCES_PLOT,
    write_json,
)
from dogbreed.train import checkpoint, decode_cache, distributed, feature_bank
from dogbreed.train.config import TrainConfig
from dogbreed.train.data import Splits, display_label, load_splits
from dogbreed.train.device import (
    check_compiler,
    default_workers,
    for_device,
    pick_device,
    seed_everything,
)
from dogbreed.train.distributed import Dist
from dogbreed.train.export import write_model_dir
from dogbreed.train.feature_bank import FeatureBank
from dogbreed.train.loop import (
    Epoch,
    Loader,
    RunState,
    Runtime,
    build_for_training,
    check_bad_share,
    evaluate,
    make_loader,
    metric_line,
    params_digest,
    record_epoch,
    set_epoch,
    train_one_epoch,
)
from dogbreed.train.models import Classifier
from dogbreed.train.monitor import ResourceMonitor
from dogbreed.train.quantize import export_int8
from dogbreed.train.report import confused_pairs, plot_curves, plot_resources

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything one run holds, passed around as one argument."""

    rt: Runtime  # the resolved config, the process group, the device
    model: Classifier  # the plain module: checkpoints, test and export read this one
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    splits: Splits
    workers: int  # loader worker processes
    frozen: bool  # backbone frozen: only the head trains
    wrapped: nn.Module | None = None  # what trains: the model (the head alone from a
    # feature bank), DDP-wrapped and/or compiled
    bank: FeatureBank | None = None  # frozen backbone: its features, computed once
    train_loader: Loader | None = None  # built at the first epoch, kept to the end
    state: RunState = field(default_factory=RunState)
    # Wall seconds by phase (encode, train, evaluate, export, int8), logged at the end.
    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, phase: str) -> contextlib.AbstractContextManager:
        return _Timer(self.seconds, phase)

    @property
    def cfg(self) -> TrainConfig:
        return self.rt.cfg

    @property
    def dist(self) -> Dist:
        return self.rt.dist

    @property
    def device(self) -> torch.device:
        return self.rt.device

    @property
    def classes(self) -> list[str]:
        return self.splits.classes


def run(cfg: TrainConfig) -> dict[str, Any]:
    """Train, evaluate, and (rank 0) write every artifact; returns the final metrics."""
    d = distributed.setup(pick_device(cfg.device, 0).type)
    try:
        return _run(cfg, d)
    finally:
        distributed.teardown(d)


class _Timer(contextlib.ContextDecorator):
    """Adds the wall time of a `with` block to seconds[phase]."""

    def __init__(self, seconds: dict[str, float], phase: str) -> None:
        self.seconds, self.phase = seconds, phase

    def __enter__(self) -> _Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        spent = time.perf_counter() - self.start
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + spent


def _run(cfg: TrainConfig, d: Dist) -> dict[str, Any]:
    ctx = _prepare(cfg, d)
    valid_loader = None
    if ctx.bank is None:
        valid_loader = make_loader(ctx.rt, ctx.splits.valid, False, ctx.workers)
    with ResourceMonitor() if d.is_main else contextlib.nullcontext() as monitor:
        _train_epochs(ctx, valid_loader)
        _load_best(ctx)
        results = _test(ctx)
    log.info(
        "rank=%d world_size=%d params_sha256=%s", d.rank, d.world_size, params_digest(ctx.model)
    )
    if d.is_main:
        _write_outputs(ctx, results, monitor)
        log.info("phase_seconds %s", metric_line({k: round(v, 2) for k, v in ctx.seconds.items()}))
    distributed.final_barrier(d)
    return results


# --- Set-up ---------------------------------------------------------------------------


def _prepare(cfg: TrainConfig, d: Dist) -> RunContext:
    """Device, config, data, model and optimiser; resumed where a checkpoint exists."""
    device = pick_device(cfg.device, d.local_rank)
    cfg = for_device(cfg, device, d.world_size)  # every field set from here on
    check_compiler(cfg)
    seed_everything(cfg.seed)
    splits = load_splits(cfg.train_dir, cfg.valid_dir, cfg.test_dir)
    frozen = not cfg.unfreeze and cfg.weights != "none"
    if not cfg.unfreeze and cfg.weights == "none" and d.is_main:
        log.info("--weights none: a random backbone is not worth freezing; training all of it")
    model, optimizer = build_for_training(cfg, len(splits.classes), device, frozen)
    ctx = RunContext(
        rt=Runtime(cfg, d, device),
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs),
        splits=splits,
        workers=cfg.workers if cfg.workers is not None else default_workers(device),
        frozen=frozen,
    )
    ctx.state = restore(ctx)
    # After restore: the fast copy of a frozen backbone takes the final weights.
    model.speed_up_frozen_backbone(device, cfg.precision == "bf16", cfg.compile)
    if d.is_main:
        _announce(ctx)
        for path in (cfg.model_dir, cfg.output_dir, cfg.checkpoint_dir):
            path.mkdir(parents=True, exist_ok=True)
        write_json(cfg.output_dir / CONFIG_REPORT, cfg.to_json())
    if feature_bank.wanted(cfg.feature_bank, frozen):
        with ctx.timed("encode"):
            ctx.bank = feature_bank.load_or_build(ctx.rt, model, splits, ctx.workers)
        model.drop_fast_backbone()  # the backbone's work is done: free its inference copy
    ctx.wrapped = _wrap(ctx)
    return ctx


def _announce(ctx: RunContext) -> None:
    cfg, splits = ctx.cfg, ctx.splits
    log.info(
        "training %s (%s backbone) on %d classes: %d train / %d valid / %d test images, "
        "device %s, world size %d, batch %d, lr %.3g, %s, %s pipeline, loader workers %d, "
        "feature bank %s",
        cfg.arch,
        "frozen" if ctx.frozen else "trained",
        len(splits.classes),
        len(splits.train),
        len(splits.valid),
        len(splits.test),
        ctx.device,
        ctx.dist.world_size,
        cfg.batch_size,
        cfg.lr,
        cfg.precision,
        cfg.pipeline,
        ctx.workers,
        f"on ({cfg.views} views)" if feature_bank.wanted(cfg.feature_bank, ctx.frozen) else "off",
    )


def _wrap(ctx: RunContext) -> nn.Module:
    """The module that trains: DDP across ranks, compiled with --compile; from a
    feature bank only the head trains, so only the head is wrapped."""
    wrapped: nn.Module = ctx.model.head if ctx.bank is not None else ctx.model
    if ctx.dist.enabled:
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=device_ids)
    if ctx.cfg.compile and not ctx.frozen:  # a frozen one compiled its backbone already
        wrapped = torch.compile(wrapped)
    return wrapped


# --- Checkpoints ----------------------------------------------------------------------


def restore(ctx: RunContext) -> RunState:
    """Resume from the latest checkpoint (read by rank 0, sent to the others)."""
    cfg = ctx.cfg
    ckpt = checkpoint.load(cfg.checkpoint_dir / checkpoint.LAST) if ctx.dist.is_main else None
    ckpt = distributed.broadcast(ctx.dist, ckpt)
    if ckpt is None:
        return RunState()
    if ckpt["arch"] != cfg.arch or ckpt["classes"] != ctx.classes:
        raise ConfigError(
            f"checkpoint in {cfg.checkpoint_dir} is for another run ({ckpt['arch']}, "
            f"{len(ckpt['classes'])} classes); empty that directory or pass another "
            "--checkpoint-dir"
        )
    ctx.model.load_state_dict(ckpt["model"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    ctx.scheduler.load_state_dict(ckpt["scheduler"])
    checkpoint.set_rng_state(ckpt["rng"])
    state = RunState(**ckpt["state"])
    log.info("resumed from %s after epoch %d", cfg.checkpoint_dir / checkpoint.LAST, state.epoch)
    return state


def save_checkpoint(ctx: RunContext, improved: bool) -> None:
    """last.pt always (all a resume needs); best.pt, the weights alone, when val_acc improved."""
    payload = {
        "arch": ctx.cfg.arch,
        "classes": ctx.classes,
        "model": ctx.model.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "scheduler": ctx.scheduler.state_dict(),
        "rng": checkpoint.rng_state(),
        "state": ctx.state.__dict__,
    }
    directory = ctx.cfg.checkpoint_dir
    if improved:
        checkpoint.save(
            directory / checkpoint.BEST, {"model": payload["model"], "epoch": ctx.state.epoch}
        )
    checkpoint.save(directory / checkpoint.LAST, payload)


def _load_best(ctx: RunContext) -> None:
    """The best epoch's weights into the model, on every rank."""
    best_path = ctx.cfg.checkpoint_dir / checkpoint.BEST
    best = checkpoint.load(best_path) if ctx.dist.is_main else None
    best = distributed.broadcast(ctx.dist, best)
    if best is not None:
        ctx.model.load_state_dict(best["model"])


# --- Epochs ---------------------------------------------------------------------------


def _train_epochs(ctx: RunContext, valid_loader: Loader | None) -> None:
    """Epochs from the one after the last finished, until --epochs or early stop."""
    while ctx.state.epoch < ctx.cfg.epochs:
        if ctx.cfg.patience and ctx.state.since_best >= ctx.cfg.patience:
            if ctx.dist.is_main:
                log.info("early stop: no better val_acc for %d epochs", ctx.state.since_best)
            break
        epoch = _one_epoch(ctx, ctx.state.epoch + 1, valid_loader)
        improved = record_epoch(ctx.state, epoch)
        if ctx.dist.is_main:  # checkpoint first: a logged epoch is always a resumable one
            save_checkpoint(ctx, improved)
            _report(ctx, epoch)
        distributed.barrier(ctx.dist)
        check_bad_share(ctx.state, ctx.cfg.max_bad_fraction)


def _one_epoch(ctx: RunContext, number: int, valid_loader: Loader | None) -> Epoch:
    """Train one epoch, step the schedule, validate."""
    if ctx.bank is not None:
        return _one_bank_epoch(ctx, ctx.bank, number)
    rt = ctx.rt
    if ctx.train_loader is None:  # built once: its workers (or cache) live for the run
        ctx.train_loader = _train_loader(ctx, number)
    with ctx.timed("train"):
        loader = ctx.train_loader
        set_epoch(loader, number)
        loss, images, dropped, seconds = train_one_epoch(
            rt, ctx.wrapped, loader, ctx.optimizer, number
        )
    # Only the device pipeline's loader counts CPU decodes; a plain DataLoader has none.
    cpu_decoded = torch.tensor([getattr(loader, "cpu_decoded", 0)], device=rt.device)
    cpu_decoded = int(distributed.all_sum(rt.dist, cpu_decoded))
    ctx.scheduler.step()
    with ctx.timed("evaluate"):
        val = evaluate(rt, ctx.wrapped, valid_loader, len(ctx.classes))
    return Epoch(number, loss, images, dropped, cpu_decoded, seconds, val)


def _train_loader(ctx: RunContext, epoch: int) -> Loader:
    loader = decode_cache.training_loader(ctx.rt, ctx.splits.train, ctx.workers, not ctx.frozen)
    if isinstance(loader, decode_cache.CachedLoader):
        ctx.seconds["decode-cache"] = loader.build_seconds
    set_epoch(loader, epoch)
    return loader


def _one_bank_epoch(ctx: RunContext, bank: FeatureBank, number: int) -> Epoch:
    """The same epoch from stored features: the head steps, the schedule, validation."""
    with ctx.timed("train"):
        loss, images, dropped, seconds = feature_bank.train_epoch(
            ctx.rt, ctx.wrapped, bank, ctx.optimizer, number
        )
    ctx.scheduler.step()
    with ctx.timed("evaluate"):
        val = feature_bank.evaluate(ctx.rt, ctx.model.head, bank.valid, len(ctx.classes))
    return Epoch(number, loss, images, dropped, 0, seconds, val)


def _report(ctx: RunContext, epoch: Epoch) -> None:
    """Rank 0: the metric line on stdout, what went wrong with the data on the log."""
    print(metric_line(epoch.row()), flush=True)
    if epoch.dropped:
        log.warning("epoch %d: skipped %d unreadable training images", epoch.number, epoch.dropped)
    if epoch.cpu_decoded and ctx.device.type == "cuda":
        log.info(
            "epoch %d: %d training images decoded on the CPU (not a JPEG nvjpeg takes)",
            epoch.number,
            epoch.cpu_decoded,
        )


# --- End of the run -------------------------------------------------------------------


def _test(ctx: RunContext) -> dict[str, Any]:
    """The run's figures, with the test split's when there is one (on the plain model)."""
    state = ctx.state
    results: dict[str, Any] = {
        "best_epoch": state.best_epoch,
        "best_val_acc": state.best_acc,
        "epochs_run": state.epoch,
        "skipped_images": state.history[-1]["skipped_images"] if state.history else 0,
    }
    if ctx.splits.test:
        with ctx.timed("evaluate"):
            if ctx.bank is not None and ctx.bank.test is not None:
                test = feature_bank.evaluate(
                    ctx.rt, ctx.model.head, ctx.bank.test, len(ctx.classes)
                )
            else:
                test_loader = make_loader(ctx.rt, ctx.splits.test, False, ctx.workers)
                test = evaluate(ctx.rt, ctx.model, test_loader, len(ctx.classes))
        results.update(test_loss=test.loss, test_acc=test.acc, test_images=test.images)
        results["confusion"] = test.confusion
        if ctx.dist.is_main:
            print(metric_line({"test_loss": test.loss, "test_acc": test.acc}), flush=True)
    return results


def _write_outputs(
    ctx: RunContext, results: dict[str, Any], monitor: ResourceMonitor | None
) -> None:
    """Rank 0: the reports in the output directory, then the model directory."""
    confusion = results.pop("confusion", None)  # (C, C) array: a report, not a metric
    _write_reports(ctx, results, confusion, monitor)
    cfg = ctx.cfg
    summary = {k: v for k, v in results.items() if k != "history"}
    with ctx.timed("export"):
        model = ctx.model.cpu()
        write_model_dir(model, cfg.model_dir, ctx.classes, cfg.arch, summary, cfg.to_json())
    if cfg.int8:
        with ctx.timed("int8"):
            export_int8(
                cfg.model_dir, ctx.splits.train, ctx.splits.valid, cfg.int8_max_drop, cfg.seed
            )
    log.info("model written to %s; reports in %s", cfg.model_dir, cfg.output_dir)


def _write_reports(
    ctx: RunContext,
    results: dict[str, Any],
    confusion: np.ndarray | None,
    monitor: ResourceMonitor | None,
) -> None:
    out, history = ctx.cfg.output_dir, ctx.state.history
    write_json(out / METRICS_REPORT, {**results, "history": history})
    if history:
        plot_curves(history, out / CURVES_PLOT)
    if confusion is not None:
        labels = [display_label(c) for c in ctx.classes]
        write_json(
            out / CONFUSIONS_REPORT,
            {
                "split": "test",
                "labels": labels,
                "most_confused": confused_pairs(confusion, labels),
                "matrix": confusion.tolist(),
            },
        )
    if monitor and monitor.rows:
        monitor.write_csv(out / RESOURCES_CSV)
        plot_resources(monitor.rows, out / RESOURCES_PLOT)
