"""ImageFolder-style datasets for training: class scan, transforms, skipped images.

Unreadable images do not kill a worker: the sample is dropped from its batch and
counted, and training fails only when the share of such images is too high.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from dogbreed.core.errors import DataError, ImageError
from dogbreed.core.preprocess import CROP, eval_input, normalize, open_image
from dogbreed.train.draws import Key, global_seed, split_key

# The formats the endpoint takes (core/imagecheck.py): a model trained on what it serves.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def display_label(folder: str) -> str:
    """'040.Bullmastiff' -> 'Bullmastiff', 'Airedale_terrier' -> 'Airedale terrier'."""
    return re.sub(r"^\d+\.", "", folder).replace("_", " ")


def scan_classes(root: Path) -> list[str]:
    """Class folder names of a split, sorted as torchvision's ImageFolder sorts them."""
    if not root.is_dir():
        raise DataError(f"missing split: {root} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class folders (expected {root}/001.Name/*.jpg)")
    return classes


def scan_images(root: Path, classes: Sequence[str]) -> list[tuple[Path, int]]:
    """(path, class index) of every image file of a split; each class must have some."""
    samples: list[tuple[Path, int]] = []
    for index, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files and folder.is_dir():
            raise DataError(f"empty class folder: {folder} has no images")
        samples.extend((p, index) for p in files)
    return samples


def check_split_classes(root: Path, classes: Sequence[str]) -> None:
    """valid/ and test/ may lack a class but must not add one training never saw."""
    extra = sorted(set(scan_classes(root)) - set(classes))
    if extra:
        raise DataError(f"{root} has classes not in train/: {', '.join(extra[:5])}")


def train_transform(size: int = CROP) -> transforms.Compose:
    """Random resized crop + horizontal flip on the PIL image (torchvision defaults)."""
    return transforms.Compose(
        [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    )


class ImageFolderDataset(Dataset):
    """Samples as (float tensor 3xHxW, class index); None for an undecodable file."""

    def __init__(self, samples: Sequence[tuple[Path, int]], train: bool) -> None:
        self.samples = list(samples)
        self.augment = train_transform() if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, int] | None:
        i, seed = split_key(key)
        path, target = self.samples[i]
        try:
            if self.augment is None:  # evaluation: the transform the server runs
                arr = eval_input(path)
            else:
                img = open_image(path)
                with global_seed(seed):  # torchvision draws from the global RNG
                    img = self.augment(img)
                arr = normalize(np.asarray(img, dtype=np.uint8))
        except ImageError:
            return None
        return torch.from_numpy(arr), target


def collate_skipping(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Stack the decodable samples; also return how many were dropped."""
    good = [s for s in batch if s is not None]
    dropped = len(batch) - len(good)
    if not good:
        return torch.empty(0, 3, CROP, CROP), torch.empty(0, dtype=torch.long), dropped
    images = torch.stack([s[0] for s in good])
    targets = torch.tensor([s[1] for s in good], dtype=torch.long)
    return images, targets, dropped


@dataclass
class Splits:
    classes: list[str]
    train: list[tuple[Path, int]]
    valid: list[tuple[Path, int]]
    test: list[tuple[Path, int]]


def load_splits(train_dir: Path, valid_dir: Path, test_dir: Path | None) -> Splits:
    classes = scan_classes(train_dir)
    if len(classes) < 2:
        raise DataError(f"{train_dir} has {len(classes)} class folder; at least 2 are needed")
    splits = {"train": scan_images(train_dir, classes)}
    for name, root in (("valid", valid_dir), ("test", test_dir)):
        if root is None:
            splits[name] = []
            continue
        check_split_classes(root, classes)
        splits[name] = scan_images(root, classes)
    if not splits["valid"]:
        raise DataError(f"{valid_dir} holds no images")
    return Splits(classes, splits["train"], splits["valid"], splits["test"])
