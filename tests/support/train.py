"""A training config for in-process tests: the settings' defaults, small and on the CPU."""

from __future__ import annotations

from pathlib import Path

import torch

from dogbreed.core.settings import SETTINGS
from dogbreed.train.config import TrainConfig
from dogbreed.train.device import for_device

CPU = torch.device("cpu")


def config(root: Path, run: Path, **overrides) -> TrainConfig:
    defaults = {k.replace("-", "_"): s.default for k, s in SETTINGS.items()}
    values = {
        **defaults,
        "arch": "resnet18",
        "weights": "none",
        "batch_size": 4,
        "device": "cpu",
        "precision": "fp32",
        "workers": 0,
        "views": 2,
        **overrides,
    }
    cfg = TrainConfig(
        **values,
        train_dir=root / "train",
        valid_dir=root / "valid",
        test_dir=root / "test",
        model_dir=run / "model",
        output_dir=run / "output",
        checkpoint_dir=run / "checkpoints",
        sagemaker=False,
    )
    return for_device(cfg, CPU, world_size=1)
