"""Time to a trained model: the course loop, today's loop and the feature bank, in one run.

Wall time from start to a written model directory, on the same dogImages-shaped
synthetic set (133 classes by default, scaled down by --per-class), the same
frozen ResNet-50 backbone, the same number of epochs:

    course loop    bench/train_throughput.py's re-implementation of the course's
                   train(): fp32, num_workers=0, no normalisation, Adam on a
                   Linear-ReLU-Linear head; validation every epoch, test, model.pth
    today's loop   `dogbreed train --feature-bank off`: every image through the
                   backbone every epoch; model.pth, model.onnx, model.int8.onnx
    feature bank   `dogbreed train` (the bank: each training image encoded in
                   --views augmented views, valid and test once; the head trained
                   from those); the same model directory

Beside each: best val_acc and test_acc; then where the bank run's time went
(encode, head epochs, evaluation, export, int8), from the run's phase_seconds line.

The backbone is frozen from a weights file: random ResNet-50 weights by default
(accuracy then shows only that both loops learn alike), or --weights FILE, e.g.
a ResNet-50 trained on another synthetic set, for real features.

    python bench/time_to_model.py [--per-class 5] [--epochs 10] [--views 2] [--skip-course]
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms

from dogbreed.train.synth import split_counts, synthesize

METRIC_RE = re.compile(r"^epoch=\d+ .*val_acc=([\d.]+) ", re.M)
TEST_RE = re.compile(r"^test_loss=[\d.]+ test_acc=([\d.]+)$", re.M)
PHASES_RE = re.compile(r"phase_seconds (.*)")
TODAY = "today's loop (bank off)"


def course_model(classes: int) -> nn.Module:
    """The course's net, from bench/train_throughput.py (one definition of it)."""
    spec = importlib.util.spec_from_file_location(
        "train_throughput", Path(__file__).resolve().parent / "train_throughput.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.course_model(classes, unfreeze=False)


def course_run(root: Path, weights: Path, epochs: int, batch: int, out: Path) -> dict:
    """The course's hpo.py flow: per epoch train then validate; test; save model.pth."""
    start = time.perf_counter()
    train_tf = transforms.Compose(
        [
            transforms.RandomResizedCrop(224),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    eval_tf = transforms.Compose([transforms.Resize((224, 224)), transforms.ToTensor()])
    train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
    loaders = {
        split: DataLoader(datasets.ImageFolder(str(root / split), transform=eval_tf), batch)
        for split in ("valid", "test")
    }
    model = course_model(len(train.classes))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    best = 0.0
    for _ in range(epochs):
        model.train()
        for images, targets in DataLoader(train, batch_size=batch, shuffle=True):
            loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        best = max(best, _accuracy(model, loaders["valid"]))
    test = _accuracy(model, loaders["test"])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pth")
    return {"wall_s": time.perf_counter() - start, "val_acc": best, "test_acc": test}


@torch.no_grad()
def _accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    right = total = 0
    for images, targets in loader:
        right += int((model(images).argmax(1) == targets).sum())
        total += len(targets)
    return right / max(total, 1)


def dogbreed_run(
    root: Path, weights: Path, args: argparse.Namespace, bank: str, views: int = 2
) -> dict:
    """`dogbreed train` as a user runs it, timed from process start to its exit."""
    run = root.parent / f"run-{bank}-{views}"
    cmd = [
        sys.executable, "-m", "dogbreed", "train", "--data", str(root),
        "--model-dir", str(run / "model"), "--output-dir", str(run / "output"),
        "--checkpoint-dir", str(run / "checkpoints"), "--arch", "resnet50",
        "--weights", str(weights), "--epochs", str(args.epochs), "--device", "cpu",
        "--batch-size", str(args.batch_size), "--feature-bank", bank, "--views", str(views),
        "--seed", "0", "--int8", "true",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"dogbreed train --feature-bank {bank} failed:\n{proc.stderr[-3000:]}")
    phases = PHASES_RE.search(proc.stderr)
    return {
        "wall_s": wall,
        "val_acc": max(float(a) for a in METRIC_RE.findall(proc.stdout)),
        "test_acc": float(TEST_RE.search(proc.stdout).group(1)),
        "phases": dict(p.split("=") for p in phases.group(1).split()) if phases else {},
        "int8": (run / "model" / "model.int8.onnx").is_file(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=133, help="classes (dogImages: 133)")
    parser.add_argument(
        "--per-class",
        type=int,
        default=5,
        help="images per class over all splits (default 5: 3 train, 1 valid, 1 test; "
        "dogImages has about 63)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every loop")
    parser.add_argument(
        "--views",
        type=int,
        nargs="+",
        default=[2],
        help="feature bank: views per image (a run each)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="batch size of every loop")
    parser.add_argument(
        "--weights", type=Path, default=None, help="ResNet-50 backbone weights (default: random)"
    )
    parser.add_argument("--skip-course", action="store_true", help="leave out the course loop")
    parser.add_argument("--data", type=Path, default=None, help="reuse an ImageFolder tree")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "data"
        if args.data is None:
            synthesize(root, args.classes, args.per_class, seed=0)
        weights = args.weights
        if weights is None:
            weights = Path(tmp) / "resnet50-random.pth"
            torch.manual_seed(0)
            torch.save(models.resnet50().state_dict(), weights)
        counts = split_counts(args.per_class) if args.data is None else {}
        print(
            f"torch={torch.__version__} threads={torch.get_num_threads()} classes={args.classes} "
            f"per_class={counts} epochs={args.epochs} views={args.views} "
            f"batch={args.batch_size} backbone=resnet50-frozen weights="
            f"{'random' if args.weights is None else args.weights.name}",
            flush=True,
        )
        rows = {}
        if not args.skip_course:
            rows["course loop"] = course_run(
                root, weights, args.epochs, args.batch_size, Path(tmp) / "course"
            )
            print(f"course loop: {rows['course loop']['wall_s']:.1f} s", flush=True)
        rows[TODAY] = dogbreed_run(root, weights, args, "off")
        print(f"today's loop: {rows[TODAY]['wall_s']:.1f} s", flush=True)
        for k in args.views:
            rows[bank_row(k)] = dogbreed_run(root, weights, args, "on", k)
            print(f"{bank_row(k)}: {rows[bank_row(k)]['wall_s']:.1f} s", flush=True)
        _table(rows, [bank_row(k) for k in args.views])


def bank_row(views: int) -> str:
    return f"feature bank, {views} view{'s' * (views > 1)}"


def _table(rows: dict[str, dict], banks: list[str]) -> None:
    today = rows[TODAY]["wall_s"]
    course = rows.get("course loop", {}).get("wall_s")
    print("\n| run | wall s | val_acc | test_acc | int8 | today / run | course / run |")
    print("| --- | ---: | ---: | ---: | --- | ---: | ---: |")
    for name, r in rows.items():
        vs_course = f"{course / r['wall_s']:.2f}x" if course else "-"
        int8 = "yes" if r.get("int8") else "no"
        print(
            f"| {name} | {r['wall_s']:.1f} | {r['val_acc']:.4f} | {r['test_acc']:.4f} | {int8} "
            f"| {today / r['wall_s']:.2f}x | {vs_course} |"
        )
    print("\nfeature bank runs, wall seconds by phase:")
    for name in banks:
        phases = {k: float(v) for k, v in rows[name]["phases"].items()}
        rest = rows[name]["wall_s"] - sum(phases.values())
        if name == banks[0]:
            print("| run | " + " | ".join([*phases, "start-up and other"]) + " |")
            print("| --- |" + " ---: |" * (len(phases) + 1))
        print(f"| {name} | " + " | ".join(f"{v:.1f}" for v in [*phases.values(), rest]) + " |")


if __name__ == "__main__":
    main()
