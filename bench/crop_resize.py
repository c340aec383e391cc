"""RandomResizedCrop of a cached batch: one F.interpolate per image against two batched products.

A batch of B images at S x S (uint8, as the decoded-image cache keeps them) with
one random box each (torchvision's RandomResizedCrop draws, on the S x S grid) is
cropped and resized to 224 x 224 two ways:

- loop: slice each crop, one `F.interpolate(antialias=True)` per image, as
  device_data.augment does;
- batched: `crop_resize` (train/resample.py), weights built for the whole batch,
  then two einsum products.

It prints images/s for each, on the CPU and on CUDA when there is one, and the
kernel launches a batch costs each way (estimated as the aten operators that
compute, counted on the CPU: on a GPU each is about one launch). On the CPU
either may win (the products do dense work over the whole S x S image; the
loop's float antialiased resize is torch's unvectorised CPU kernel); the
batched path is for GPUs, where the loop's cost is hundreds of small launches.

    python bench/crop_resize.py [--batch 64] [--side 256] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from dogbreed.core.preprocess import CROP
from dogbreed.train.device_data import sample_crop
from dogbreed.train.resample import crop_resize


class OpCounter(TorchDispatchMode):
    """Counts the aten operators that compute (views excluded): on a GPU each is about one
    kernel launch, so this estimates the launches without needing one."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        schema = func._schema
        if schema.is_mutable or not any(r.alias_info for r in schema.returns):
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    with OpCounter() as counter:
        fn()
    return counter.count


def loop(images: torch.Tensor, boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """The reference: one F.interpolate per image on its integer crop."""
    out = torch.empty((len(images), 3, CROP, CROP), device=images.device)
    for k, (top, left, h, w) in enumerate(boxes):
        crop = images[k : k + 1, :, top : top + h, left : left + w].float()
        out[k] = F.interpolate(
            crop, size=(CROP, CROP), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return out


def timed(fn, device: torch.device, repeats: int) -> float:
    """Best seconds of `repeats` runs after one warm-up (kernels compiled, caches warm)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def run(device: torch.device, args: argparse.Namespace) -> list[tuple[str, str, float, float]]:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.side, args.side), dtype=torch.uint8)
    images = images.to(device)
    boxes = [sample_crop(args.side, args.side) for _ in range(args.batch)]
    box_tensor = torch.tensor(boxes, dtype=torch.float32, device=device)
    diff = (loop(images, boxes) - crop_resize(images, box_tensor)).abs().max().item()
    rows = []
    for name, fn in [
        ("loop", lambda: loop(images, boxes)),
        ("batched fp32", lambda: crop_resize(images, box_tensor)),
    ]:
        seconds = timed(fn, device, args.repeats)
        rows.append((device.type, name, args.batch / seconds, diff))
    if device.type == "cuda":
        seconds = timed(lambda: crop_resize(images, box_tensor, dtype=torch.bfloat16), device, 3)
        rows.append((device.type, "batched bf16", args.batch / seconds, float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=64, help="images in the batch (default 64)")
    parser.add_argument(
        "--side", type=int, default=256, help="the cached images' side S, in pixels (default 256)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per path; the best counts (default 3)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--no-cuda", action="store_true", help="time the CPU only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.no_cuda:
        devices.append(torch.device("cuda"))
    print(f"batch {args.batch} x 3 x {args.side} x {args.side} uint8 -> {CROP} x {CROP}")
    print(f"{'device':<7} {'path':<13} {'images/s':>10} {'max |diff|':>11}")
    for device in devices:
        for dev, name, rate, diff in run(device, args):
            print(f"{dev:<7} {name:<13} {rate:>10.0f} {diff:>11.2e}")
    images = torch.zeros((args.batch, 3, args.side, args.side), dtype=torch.uint8)
    boxes = [sample_crop(args.side, args.side) for _ in range(args.batch)]
    loop_ops = count_ops(lambda: loop(images, boxes))
    batched_ops = count_ops(lambda: crop_resize(images, torch.tensor(boxes, dtype=torch.float32)))
    print(
        f"kernel launches a batch (aten operators that compute): loop {loop_ops}"
        f" ({loop_ops / args.batch:.1f} an image), batched {batched_ops} (any batch size)"
    )


if __name__ == "__main__":
    main()
