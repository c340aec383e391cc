"""SageMaker's /opt/ml contract in one place: the names and file formats that training
reads (train/sagemaker.py) and the local twins write (local/opt_ml.py).

    BASE/input/config/hyperparameters.json   {"name": "value"}: every value a string
                                             (the SDK's framework estimators JSON-encode them)
    BASE/input/config/resourceconfig.json    {"current_host", "hosts", "network_interface_name"}
    BASE/input/config/inputdataconfig.json   {"<channel>": {"TrainingInputMode": ...}}
    BASE/input/data/<channel>/               the data channels (or SM_CHANNEL_*)
    BASE/model, BASE/output/data             outputs (or SM_MODEL_DIR, SM_OUTPUT_DATA_DIR)
    BASE/checkpoints                         synced to S3; a restarted job resumes from it
    BASE/output/failure                      why the job failed (SageMaker shows it)

BASE is /opt/ml, or $SAGEMAKER_BASE_DIR.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dogbreed.core import settings

CONFIG_DIR = "input/config"
HYPERPARAMETERS_FILE = f"{CONFIG_DIR}/hyperparameters.json"
RESOURCE_CONFIG_FILE = f"{CONFIG_DIR}/resourceconfig.json"
INPUT_DATA_CONFIG_FILE = f"{CONFIG_DIR}/inputdataconfig.json"
CHANNELS_DIR = "input/data"
TRAINING_CHANNEL = "training"
MODEL_DIR = "model"
OUTPUT_DIR = "output"
OUTPUT_DATA_DIR = f"{OUTPUT_DIR}/data"
FAILURE_FILE = f"{OUTPUT_DIR}/failure"
CHECKPOINT_DIR = "checkpoints"
# What a training job may write (SageMaker uploads or syncs each).
WRITABLE_DIRS = (MODEL_DIR, OUTPUT_DIR, CHECKPOINT_DIR)


def base_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get(settings.SAGEMAKER_BASE_DIR) or settings.DEFAULT_BASE_DIR)


def resource_config(host: str, hosts: list[str], interface: str) -> dict[str, Any]:
    """resourceconfig.json as SageMaker writes it for one host."""
    return {"current_host": host, "hosts": list(hosts), "network_interface_name": interface}


def file_channel() -> dict[str, str]:
    """One channel's entry of inputdataconfig.json: files, the whole set on every host."""
    return {
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
    }


def encode_hyperparameter(value: Any) -> str:
    """A hyperparameter value as SageMaker stores it: strings as they are, anything else
    JSON-encoded (3 -> "3", true -> "true")."""
    return value if isinstance(value, str) else json.dumps(value)


def decode_hyperparameter(raw: Any) -> Any:
    """The other way: a JSON-encoded scalar decoded, anything else kept as it is."""
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        return decoded if isinstance(decoded, str | int | float | bool) else raw
    return raw
