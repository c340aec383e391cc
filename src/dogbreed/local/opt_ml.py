"""The /opt/ml tree SageMaker gives each training host, laid out on this machine.

    ROOT/input/config/hyperparameters.json   {"name": "value", ...}: every value a string
    ROOT/input/config/resourceconfig.json    {"current_host", "hosts", "network_interface_name"}
    ROOT/input/config/inputdataconfig.json   {"training": {...}}: one File-mode channel
    ROOT/input/data/training/                the channel (a read-only bind mount of the data)
    ROOT/model/  ROOT/output/  ROOT/checkpoints/

Pure file work: no Docker here, so it is tested in-process.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dogbreed.core.errors import ConfigError, DataError

CHANNEL = "training"
CONFIG_DIR = "input/config"
CHANNEL_DIR = f"input/data/{CHANNEL}"
WRITABLE_DIRS = ("model", "output", "checkpoints")
INPUT_DATA_CONFIG = {
    CHANNEL: {
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }
}
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


def as_sagemaker_string(value: Any) -> str:
    """A hyperparameter value as SageMaker stores it: strings as they are, anything else
    JSON-encoded (3 -> "3", true -> "true")."""
    return value if isinstance(value, str) else json.dumps(value)


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
        values.update({str(k): as_sagemaker_string(v) for k, v in doc.items()})
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


def resource_config(host: str, hosts: list[str], interface: str) -> dict[str, Any]:
    return {"current_host": host, "hosts": list(hosts), "network_interface_name": interface}


def write_tree(
    root: Path, host: str, hosts: list[str], hps: Mapping[str, str], interface: str
) -> Path:
    """Lay out one host's /opt/ml tree under `root` (which must not exist yet)."""
    config = root / CONFIG_DIR
    config.mkdir(parents=True)
    files = {
        "hyperparameters.json": {k: str(v) for k, v in hps.items()},
        "resourceconfig.json": resource_config(host, hosts, interface),
        "inputdataconfig.json": INPUT_DATA_CONFIG,
    }
    for name, doc in files.items():
        (config / name).write_text(json.dumps(doc, indent=2) + "\n")
    (root / CHANNEL_DIR).mkdir(parents=True)  # mount point of the data
    for sub in WRITABLE_DIRS:
        (root / sub).mkdir()
        (root / sub).chmod(0o777)  # an image may train as a user other than ours
    return root
