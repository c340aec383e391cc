"""Running `dogbreed` as a user would, and the training recipes the tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The end-to-end training recipe: learnable in 4 CPU epochs from random weights
# (best val_acc 0.95-1.0 on 40 validation images over seeds and fp32/bf16; with 60
# images a class and 3 epochs it was 0.80-0.93).
E2E_CLASSES = 5
E2E_PER_CLASS = 80
E2E_EPOCHS = 4
E2E_TRAIN_FLAGS = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--epochs",
    str(E2E_EPOCHS),
    "--batch-size",
    "8",
    "--lr",
    "0.001",
    "--device",
    "cpu",
    "--seed",
    "0",
]


def run_cli(
    *args: str | os.PathLike, env: dict | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """Run `python -m dogbreed ARGS` as a user would; returns the finished process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "dogbreed", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dogbreed {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train_dirs(root: Path) -> list[str]:
    return [
        "--model-dir",
        str(root / "model"),
        "--output-dir",
        str(root / "output"),
        "--checkpoint-dir",
        str(root / "checkpoints"),
    ]


TINY_TRAIN_FLAGS = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--int8",  # plumbing runs; the int8 export is tested on the end-to-end model
    "false",
]
