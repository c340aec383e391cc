"""What depends on the training device, resolved before anything is built: the device
itself, and the batch size, learning rate, precision, pipeline and loader workers
that TrainConfig leaves to it ("auto" or unset).

    cfg = for_device(resolve(flags, job), pick_device(cfg.device, local_rank), world_size)

after which every field of the TrainConfig is set; the loop (loop.py) only reads it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import shutil

import numpy as np
import torch

from dogbreed.core.errors import ConfigError
from dogbreed.core.hardware import bf16_native_cpu, usable_cores
from dogbreed.train.config import TrainConfig

# Defaults that depend on the device: per-process batch size, and the head's
# learning rate at BASE_BATCH, scaled by sqrt(global batch / BASE_BATCH), the
# square-root rule for Adam-type optimisers.
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 256
BASE_LR = 1e-3
BASE_BATCH = 32


def pick_device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available (use --device cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def for_device(cfg: TrainConfig, device: torch.device, world_size: int) -> TrainConfig:
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
    cores = usable_cores()
    # On CPU the model needs the cores too; leave it at least half of them.
    return min(8, cores if device.type == "cuda" else max(1, cores // 2))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
