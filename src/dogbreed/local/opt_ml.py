"""The /opt/ml tree SageMaker gives each training host, laid out on this machine
with core/opt_ml.py's names and formats (the ones training reads): one File-mode
channel, `training`, a read-only bind mount of the data.

Pure file work: no Docker here, so it is tested in-process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from dogbreed.core.errors import ConfigError, DataError
from dogbreed.core.opt_ml import (
    CHANNELS_DIR,
    HYPERPARAMETERS_FILE,
    INPUT_DATA_CONFIG_FILE,
    RESOURCE_CONFIG_FILE,
    TRAINING_CHANNEL,
    WRITABLE_DIRS,
    encode_hyperparameter,
    file_channel,
    resource_config,
)

CHANNEL_DIR = f"{CHANNELS_DIR}/{TRAINING_CHANNEL}"
# A hyperparameter name: up to 256 characters (SageMaker's limit), no space or '='.
_KEY = re.compile(r"[^\s=]{1,256}")


def host_names(count: int) -> list[str]:
    """SageMaker's host names for `count` instances: algo-1 ... algo-N."""
    if count < 1:
        raise ConfigError(f"--hosts {count}: must be at least 1")
    return [f"algo-{i}" for i in range(1, count + 1)]


def parse_hyperparameter(text: str) -> tuple[str, str]:
    """'key=value' -> (key, value); the value is kept as given (it may hold '=')."""
    key, sep, value = text.partition("=")
    if not sep or not key or not _KEY.fullmatch(key):
        raise ConfigError(f"--hp {text!r}: expected key=value (e.g. --hp epochs=3)")
    return key, value


def hyperparameters(json_text: str | None, pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The job's hyperparameters: a JSON object (values made strings), then key=value pairs
    (which win)."""
    values: dict[str, str] = {}
    if json_text and json_text.strip():
        try:
            doc = json.loads(json_text)
        except ValueError as exc:
            raise ConfigError(f"--hp-json is not valid JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError("--hp-json must be a JSON object of name -> value")
        values.update({str(k): encode_hyperparameter(v) for k, v in doc.items()})
    values.update(dict(pairs))
    return values


def check_data(data: Path) -> Path:
    """The dataset root must hold train/ (valid/ and test/ optional); returned absolute."""
    if not data.is_dir():
        raise DataError(f"--data {data}: not a directory")
    if not (data / "train").is_dir():
        raise DataError(
            f"--data {data}: no train/ directory (expected DIR/train/<class>/*.jpg; "
            "make one with 'dogbreed data synth --out DIR')"
        )
    return data.resolve()


def write_tree(
    root: Path, host: str, hosts: list[str], hps: Mapping[str, str], interface: str
) -> Path:
    """Lay out one host's /opt/ml tree under `root` (which must not exist yet)."""
    files = {
        HYPERPARAMETERS_FILE: {k: str(v) for k, v in hps.items()},
        RESOURCE_CONFIG_FILE: resource_config(host, hosts, interface),
        INPUT_DATA_CONFIG_FILE: {TRAINING_CHANNEL: file_channel()},
    }
    for name, doc in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(doc, indent=2) + "\n")
    (root / CHANNEL_DIR).mkdir(parents=True)  # mount point of the data
    for sub in WRITABLE_DIRS:
        (root / sub).mkdir()
        (root / sub).chmod(0o777)  # an image may train as a user other than ours
    return root
