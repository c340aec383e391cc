"""Where the training settings come from, resolved in one place.

Precedence, lowest first: built-in defaults, SageMaker's
`input/config/hyperparameters.json`, `SM_*` variables and channels, explicit CLI
flags. Under SageMaker the tree lives in /opt/ml (or $SAGEMAKER_BASE_DIR); on a
laptop or EC2 host nothing of it exists and the flags say everything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dogbreed.core.errors import ConfigError
from dogbreed.core.settings import SETTINGS, parse_setting

# Names defined by SageMaker and its training toolkit.
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"
SM_HOSTS = "SM_HOSTS"
SM_CURRENT_HOST = "SM_CURRENT_HOST"
SM_NUM_GPUS = "SM_NUM_GPUS"
HYPERPARAMETERS_FILE = "input/config/hyperparameters.json"
RESOURCE_CONFIG_FILE = "input/config/resourceconfig.json"
INPUT_DATA_CONFIG_FILE = "input/config/inputdataconfig.json"
CHANNELS_DIR = "input/data"
FAILURE_FILE = "output/failure"
# Keys SageMaker, its SDK or a tuning job add that are not ours.
FOREIGN_KEY_PREFIXES = ("sagemaker_", "_")

SPLITS = ("train", "valid", "test")
# Channel names accepted for each split when data comes as separate channels.
SPLIT_CHANNELS = {"train": ("train",), "valid": ("valid", "validation", "val"), "test": ("test",)}


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
    batch_size: int | None  # None: the device's default (resolved by train.resolve_for_device)
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
    sagemaker: bool

    def to_json(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}


def base_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get(BASE_DIR_ENV, DEFAULT_BASE_DIR))


def decode_hyperparameter(raw: Any) -> Any:
    """SageMaker sends strings, the SDK's framework estimators JSON-encode them."""
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        return decoded if isinstance(decoded, str | int | float | bool) else raw
    return raw


def read_hyperparameters(base: Path) -> dict[str, Any]:
    """Our settings from hyperparameters.json, parsed; {} when there is no such file."""
    path = base / HYPERPARAMETERS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith(FOREIGN_KEY_PREFIXES):
            continue
        key = name.replace("_", "-")
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(f"unknown hyperparameter '{name}' (known: {known})")
        values[key] = parse_setting(key, decode_hyperparameter(value), "hyperparameter")
    return values


def _channel_dirs(base: Path, env: Mapping[str, str]) -> dict[str, Path]:
    """Channel name -> directory, from SM_CHANNEL_* or from the /opt/ml tree."""
    channels: dict[str, Path] = {}
    root = base / CHANNELS_DIR
    if root.is_dir():
        channels.update({p.name: p for p in root.iterdir() if p.is_dir()})
    for name, value in env.items():
        if name.startswith(SM_CHANNEL_PREFIX):
            channels[name[len(SM_CHANNEL_PREFIX) :].lower()] = Path(value)
    return channels


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


def in_sagemaker(env: Mapping[str, str]) -> bool:
    base = base_dir(env)
    return (base / RESOURCE_CONFIG_FILE).is_file() or SM_CURRENT_HOST in env


def resolve(flags: Mapping[str, Any], env: Mapping[str, str] | None = None) -> TrainConfig:
    """Merge defaults, hyperparameters.json, SM_* variables and flags (None = not given)."""
    env = os.environ if env is None else env
    base = base_dir(env)
    sagemaker = in_sagemaker(env)
    values = {k: s.default for k, s in SETTINGS.items()}
    values.update(read_hyperparameters(base))
    values.update({k: v for k, v in flags.items() if k in SETTINGS and v is not None})

    data = flags.get("data")
    dirs = split_dirs(Path(data) if data else None, _channel_dirs(base, env))

    if sagemaker:
        defaults = {
            "model-dir": env.get(SM_MODEL_DIR, str(base / "model")),
            "output-dir": env.get(SM_OUTPUT_DATA_DIR, str(base / "output" / "data")),
            "checkpoint-dir": str(base / "checkpoints"),
        }
    else:
        defaults = {
            "model-dir": "artifacts/model",
            "output-dir": "artifacts/output",
            "checkpoint-dir": "artifacts/checkpoints",
        }
    paths = {k: Path(flags.get(k) or defaults[k]) for k in defaults}
    return TrainConfig(
        train_dir=dirs["train"],
        valid_dir=dirs["valid"],
        test_dir=dirs["test"],
        model_dir=paths["model-dir"],
        output_dir=paths["output-dir"],
        checkpoint_dir=paths["checkpoint-dir"],
        arch=values["arch"],
        weights=values["weights"],
        epochs=values["epochs"],
        batch_size=values["batch-size"],
        lr=values["lr"],
        backbone_lr_scale=values["backbone-lr-scale"],
        weight_decay=values["weight-decay"],
        unfreeze=values["unfreeze"],
        workers=values["workers"],
        device=values["device"],
        precision=values["precision"],
        channels_last=values["channels-last"],
        pipeline=values["pipeline"],
        compile=values["compile"],
        int8=values["int8"],
        int8_max_drop=values["int8-max-drop"],
        seed=values["seed"],
        patience=values["patience"],
        max_bad_fraction=values["max-bad-fraction"],
        sagemaker=sagemaker,
    )


def hosts(env: Mapping[str, str] | None = None) -> tuple[list[str], str]:
    """(all hosts, this host) from resourceconfig.json or SM_HOSTS; one local host otherwise."""
    env = os.environ if env is None else env
    path = base_dir(env) / RESOURCE_CONFIG_FILE
    if path.is_file():
        try:
            conf = json.loads(path.read_text())
            return list(conf["hosts"]), str(conf["current_host"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path} is malformed: {exc}") from None
    if SM_HOSTS in env:
        return list(json.loads(env[SM_HOSTS])), env.get(SM_CURRENT_HOST, "algo-1")
    return ["localhost"], "localhost"


def write_failure(message: str, env: Mapping[str, str] | None = None) -> None:
    """Leave the reason of a failed SageMaker job where SageMaker reads it."""
    env = os.environ if env is None else env
    if not in_sagemaker(env):
        return
    path = base_dir(env) / FAILURE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message + "\n")
    except OSError:
        pass
