"""Training throughput: our loop against the course loop and against the model alone.

All in one run, on the same synthetic JPEGs and the same ResNet-50 (the course's
model, frozen backbone by default, `--unfreeze` for a full fine-tune):

    course loop   a faithful re-implementation (fp32, num_workers=0, PIL, no normalisation)
    dogbreed      the path `dogbreed train` runs (same loader, model, epoch function)
    model only    our model, precision and memory format with the batch already on
                  the device: the limit any data pipeline can reach

Figures are images/s over one pass of the images after a warm-up, then the
ratios. On a GPU (--device cuda) our loop uses the device data pipeline (nvjpeg
decode and augmentation on the GPU) and bf16; on CPU, Pillow in loader workers,
and bf16 where the CPU has it in hardware.

    python bench/train_throughput.py [--unfreeze] [--images N] [--batch-size B] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

from dogbreed.core.settings import SETTINGS
from dogbreed.train import decode_cache
from dogbreed.train.config import TrainConfig
from dogbreed.train.data import load_splits
from dogbreed.train.device import default_workers, for_device
from dogbreed.train.distributed import Dist
from dogbreed.train.loop import (
    Runtime,
    build_for_training,
    set_epoch,
    to_device,
    train_one_epoch,
    train_step,
)
from dogbreed.train.synth import synthesize

# Both loops run this many batches before timing (oneDNN picks and caches kernels on its
# first runs).
WARMUP_BATCHES = 2
MODEL_ONLY_STEPS = 20


def course_model(classes: int, unfreeze: bool) -> nn.Module:
    """hpo.py's net: frozen ResNet-50, head Linear(2048,128) -> ReLU -> Linear(128,C)."""
    model = models.resnet50(weights=None)
    for p in model.parameters():
        p.requires_grad = unfreeze
    model.fc = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(inplace=True), nn.Linear(128, classes))
    return model


def course_loop(root: Path, batch_size: int, device: torch.device, unfreeze: bool) -> float:
    """The course's train(): ImageFolder, num_workers=0, no normalisation, fp32, Adam on fc
    (on everything with --unfreeze)."""
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    data = datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    model = course_model(len(data.classes), unfreeze).to(device)
    params = model.parameters() if unfreeze else model.fc.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    model.train()
    warm = iter(loader)
    for _ in range(WARMUP_BATCHES):
        _course_step(model, optimizer, criterion, *next(warm), device)
    start, seen = time.perf_counter(), 0
    for images, targets in loader:
        _course_step(model, optimizer, criterion, images, targets, device)
        seen += len(targets)
    _sync(device)
    return seen / (time.perf_counter() - start)


def _course_step(model, optimizer, criterion, images, targets, device) -> None:
    images, targets = images.to(device), targets.to(device)
    loss = criterion(model(images), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def our_config(root: Path, batch_size: int, device: torch.device, **overrides) -> TrainConfig:
    defaults = {k.replace("-", "_"): s.default for k, s in SETTINGS.items()}
    cfg = TrainConfig(
        **{
            **defaults,
            "arch": "resnet50",
            "weights": "none",  # random weights compute as fast, and need no download
            "batch_size": batch_size,
            "device": device.type,
            **overrides,
        },
        train_dir=root / "train",
        valid_dir=root / "valid",
        test_dir=None,
        model_dir=root,
        output_dir=root,
        checkpoint_dir=root,
        sagemaker=False,
    )
    return for_device(cfg, device, world_size=1)


def our_model(classes: int, cfg: TrainConfig, device: torch.device):
    """The model and optimiser as dogbreed.train.run sets them up (frozen unless --unfreeze)."""
    model, optimizer = build_for_training(cfg, classes, device, frozen=not cfg.unfreeze)
    model.speed_up_frozen_backbone(device, cfg.precision == "bf16", cfg.compile)
    return model, optimizer


def our_loop(root: Path, cfg: TrainConfig, device: torch.device) -> tuple[float, float | None]:
    """dogbreed's training path: the loader `train` builds (decode cache or kept workers),
    its model and epoch function. (images/s of epoch 1 after a whole warm-up epoch 0, the
    cache's build seconds or None)."""
    splits = load_splits(root / "train", root / "valid", None)
    model, optimizer = our_model(len(splits.classes), cfg, device)
    workers = cfg.workers if cfg.workers is not None else default_workers(device)
    rt = Runtime(cfg, Dist(), device)
    loader = decode_cache.training_loader(rt, splits.train, workers, cfg.unfreeze)
    build = getattr(loader, "build_seconds", None)
    for epoch in (0, 1):  # epoch 0 warms up: workers started, kernels picked
        set_epoch(loader, epoch)
        _, images, _, seconds = train_one_epoch(rt, model, loader, optimizer, epoch)
    return images / seconds, build


def model_only(classes: int, cfg: TrainConfig, device: torch.device) -> float:
    """Training steps on one batch already on the device: no data pipeline at all."""
    model, optimizer = our_model(classes, cfg, device)
    model.train()
    x = to_device(torch.randn(cfg.batch_size, 3, 224, 224), device, cfg.channels_last)
    y = torch.randint(0, classes, (cfg.batch_size,), device=device)
    rt = Runtime(cfg, Dist(), device)

    def step() -> None:
        train_step(model, x, y, optimizer, rt)

    for _ in range(WARMUP_BATCHES):
        step()
    _sync(device)
    steps = MODEL_ONLY_STEPS if device.type == "cuda" else 3
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * cfg.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda"
    )
    parser.add_argument(
        "--images", type=int, default=None, help="training images (default: 96 CPU, 5120 GPU)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size of all loops (16 CPU, 256 GPU)"
    )
    parser.add_argument("--unfreeze", action="store_true", help="fine-tune the whole network")
    parser.add_argument("--workers", type=int, default=None, help="our loader's workers")
    parser.add_argument(
        "--pipeline", choices=("auto", "loader", "device"), default="auto", help="our data pipeline"
    )
    parser.add_argument(
        "--decode-cache",
        choices=("auto", "on", "off"),
        default="auto",
        help="our pipeline with --unfreeze --pipeline device: images decoded once, cached",
    )
    parser.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto", help="our precision"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--skip-course", action="store_true", help="leave out the course loop")
    parser.add_argument("--data", type=Path, default=None, help="reuse an ImageFolder tree")
    args = parser.parse_args()
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    images = args.images or (5120 if gpu else 96)
    batch_size = args.batch_size or (256 if gpu else 16)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp)
            classes = 8
            per_class = max(3, round(images / classes / 0.8))
            synthesize(root, classes=classes, per_class=per_class, seed=0)
        n = len(list((root / "train").glob("*/*")))
        cfg = our_config(
            root,
            batch_size,
            device,
            unfreeze=args.unfreeze,
            workers=args.workers,
            pipeline=args.pipeline,
            decode_cache=args.decode_cache,
            precision=args.precision,
            compile=args.compile,
        )
        model = "resnet50-" + ("unfrozen" if args.unfreeze else "frozen")
        print(
            f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
            f"train_images={n} batch_size={batch_size} model={model} precision={cfg.precision} "
            f"pipeline={cfg.pipeline} channels_last={cfg.channels_last} compile={cfg.compile}",
            flush=True,
        )
        figures = {}
        if not args.skip_course:
            figures["course_loop"] = course_loop(root, batch_size, device, args.unfreeze)
            print(f"course_loop images_per_s={figures['course_loop']:.1f}", flush=True)
        figures["dogbreed_loop"], build = our_loop(root, cfg, device)
        cache = "off" if build is None else f"built_in_s={build:.2f}"
        print(
            f"dogbreed_loop images_per_s={figures['dogbreed_loop']:.1f} decode_cache={cache}",
            flush=True,
        )
        classes = len(list((root / "train").iterdir()))
        figures["model_only"] = model_only(classes, cfg, device)
        print(f"model_only images_per_s={figures['model_only']:.1f}", flush=True)
        ours = figures["dogbreed_loop"]
        ratios = [f"dogbreed_vs_model_only={ours / figures['model_only']:.2f}"]
        if "course_loop" in figures:
            ratios.insert(0, f"speedup_vs_course={ours / figures['course_loop']:.2f}x")
        print(" ".join(ratios))


if __name__ == "__main__":
    main()
