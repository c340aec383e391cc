"""Training settings resolved in one place, into one TrainConfig.

Precedence, lowest first: built-in defaults (core.settings), SageMaker's
hyperparameters and channels (a `sagemaker.Job`, read once), `SM_*` paths,
explicit CLI flags. On a laptop or EC2 host no job files exist and the flags
say everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dogbreed.core.errors import ConfigError
from dogbreed.core.settings import SETTINGS
from dogbreed.train.sagemaker import Job

SPLITS = ("train", "valid", "test")
# Channel names accepted for each split when data comes as separate channels.
SPLIT_CHANNELS = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}
# Where outputs go when no flag and no SageMaker says otherwise.
LOCAL_DIRS = {
    "model-dir": "artifacts/model",
    "output-dir": "artifacts/output",
    "checkpoint-dir": "artifacts/checkpoints",
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs, fully resolved."""

    train_dir: Path
    valid_dir: Path
    test_dir: Path | None
    model_dir: Path
    output_dir: Path
    checkpoint_dir: Path
    arch: str
    weights: str
    epochs: int
    batch_size: int | None  # None: the device's default (set by device.for_device)
    lr: float | None
    backbone_lr_scale: float
    weight_decay: float
    unfreeze: bool
    workers: int | None
    device: str
    precision: str
    channels_last: bool
    pipeline: str
    compile: bool
    int8: bool
    int8_max_drop: float
    seed: int
    patience: int
    max_bad_fraction: float
    feature_bank: str  # auto, on or off (train.feature_bank)
    views: int  # feature bank: augmented views per training image
    decode_cache: str  # auto, on or off (train.decode_cache)
    sagemaker: bool

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def split_dirs(data: Path | None, channels: Mapping[str, Path]) -> dict[str, Path | None]:
    """train/valid/test directories from --data or from channels; test is optional."""
    if data is None:
        if "training" in channels:
            data = channels["training"]
        elif "train" in channels:
            found = {
                s: next((channels[c] for c in SPLIT_CHANNELS[s] if c in channels), None)
                for s in SPLITS
            }
            if found["valid"] is None:
                raise ConfigError(
                    "a 'train' channel needs a 'valid' (or 'validation') channel beside it"
                )
            return found
        else:
            raise ConfigError(
                "no training data: pass --data DIR (holding train/ and valid/) "
                "or give SageMaker a 'training' channel"
            )
    if not data.is_dir():
        raise ConfigError(f"data directory {data} does not exist")
    dirs: dict[str, Path | None] = {}
    for split in SPLITS:
        dirs[split] = next((data / c for c in SPLIT_CHANNELS[split] if (data / c).is_dir()), None)
    for split in ("train", "valid"):
        if dirs[split] is None:
            raise ConfigError(f"missing split: {data} has no '{split}/' folder")
    return dirs


def resolve(flags: Mapping[str, Any], job: Job | None = None) -> TrainConfig:
    """Merge defaults, the job's hyperparameters and paths, and flags (None = not given)."""
    job = Job.read() if job is None else job
    values = {k: s.default for k, s in SETTINGS.items()}
    values.update(job.hyperparameters)
    values.update({k: v for k, v in flags.items() if k in SETTINGS and v is not None})

    data = flags.get("data")
    dirs = split_dirs(Path(data) if data else None, job.channels)
    defaults = dict(LOCAL_DIRS)
    if job.sagemaker:
        defaults = {
            "model-dir": str(job.model_dir),
            "output-dir": str(job.output_data_dir),
            "checkpoint-dir": str(job.checkpoint_dir),
        }
    paths = {k: Path(flags.get(k) or defaults[k]) for k in defaults}
    settings = {k.replace("-", "_"): v for k, v in values.items()}
    return TrainConfig(
        train_dir=dirs["train"],
        valid_dir=dirs["valid"],
        test_dir=dirs["test"],
        model_dir=paths["model-dir"],
        output_dir=paths["output-dir"],
        checkpoint_dir=paths["checkpoint-dir"],
        sagemaker=job.sagemaker,
        **settings,
    )
