"""Training throughput: our loop against a faithful re-implementation of the course loop.

Both train the same frozen ResNet-50 (the course's model) on the same synthetic
JPEGs in one run; the figures are images/s over one pass of the images after a
warm-up. Run on CPU here, on a GPU where one is available (--device cuda).

    python bench/train_throughput.py [--images 96] [--batch-size 16] [--device cpu]
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

from dogbreed.data import load_splits
from dogbreed.distributed import Dist
from dogbreed.environment import SETTINGS, TrainConfig
from dogbreed.models import build_model, param_groups
from dogbreed.synth import synthesize
from dogbreed.train import default_workers, make_loader, train_one_epoch

# Both loops run this many batches before timing (a traced model profiles its first runs).
WARMUP_BATCHES = 2


def course_model(classes: int) -> nn.Module:
    """hpo.py's net: frozen ResNet-50, head Linear(2048,128) -> ReLU -> Linear(128,C)."""
    model = models.resnet50(weights=None)
    for p in model.parameters():
        p.requires_grad = False
    model.fc = nn.Sequential(nn.Linear(2048, 128), nn.ReLU(inplace=True), nn.Linear(128, classes))
    return model


def course_loop(root: Path, batch_size: int, device: torch.device) -> float:
    """The course's train(): ImageFolder, num_workers=0, no normalisation, fp32, Adam on fc."""
    tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    data = datasets.ImageFolder(str(root / "train"), transform=tf)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    model = course_model(len(data.classes)).to(device)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-3)
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


def our_loop(root: Path, batch_size: int, device: torch.device, workers: int | None) -> float:
    """dogbreed's training path: the same loader, model and epoch function `train` uses."""
    splits = load_splits(root / "train", root / "valid", None)
    defaults = {k.replace("-", "_"): s.default for k, s in SETTINGS.items()}
    cfg = TrainConfig(
        **{**defaults, "batch_size": batch_size, "workers": workers, "device": device.type},
        train_dir=root / "train",
        valid_dir=root / "valid",
        test_dir=None,
        model_dir=root,
        output_dir=root,
        checkpoint_dir=root,
        sagemaker=False,
    )
    model = build_model("resnet50", len(splits.classes), "none", frozen=True).to(device)
    model.speed_up_frozen_backbone(device)
    optimizer = torch.optim.AdamW(param_groups(model, 1e-3, 0.1))
    n_workers = workers if workers is not None else default_workers(device)
    d = Dist()
    warm = make_loader(splits.train[: batch_size * WARMUP_BATCHES], True, cfg, d, device, n_workers)
    train_one_epoch(model, warm, optimizer, device, d, 0)
    loader = make_loader(splits.train, True, cfg, d, device, n_workers, epoch=1)
    _, images, _, seconds = train_one_epoch(model, loader, optimizer, device, d, 1)
    return images / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="training images per pipeline")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size for both loops")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=None, help="our loader's workers")
    parser.add_argument("--data", type=Path, default=None, help="reuse an ImageFolder tree")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp)
            classes = 8
            per_class = max(3, round(args.images / classes / 0.8))
            synthesize(root, classes=classes, per_class=per_class, seed=0)
        n = len(list((root / "train").glob("*/*")))
        print(
            f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} "
            f"train_images={n} batch_size={args.batch_size} model=resnet50-frozen"
        )
        course = course_loop(root, args.batch_size, device)
        print(f"course_loop images_per_s={course:.1f}")
        ours = our_loop(root, args.batch_size, device, args.workers)
        print(f"dogbreed_loop images_per_s={ours:.1f}")
        print(f"speedup={ours / course:.2f}x")


if __name__ == "__main__":
    main()
