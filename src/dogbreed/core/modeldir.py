"""The model directory contract: the files training writes and servers read.

    model.pth          torch state dict (training's own format)
    model.onnx         fp32 ONNX, input 'input' (N, 3, 224, 224), output 'logits' (N, classes)
    model.int8.onnx    static int8 ONNX, when it passed its accuracy gate
    metadata.json      labels in index order, preprocessing, metrics, which files exist

Also the names of the reports training writes to its output directory, and
the one JSON writer (atomic: a reader never sees half a file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dogbreed.core.errors import ModelError

METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
STATE_DICT_FILE = "model.pth"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

# Training's output directory.
CONFIG_REPORT = "config.json"
METRICS_REPORT = "metrics.json"
CONFUSIONS_REPORT = "confusions.json"
CURVES_PLOT = "training_curves.png"
RESOURCES_CSV = "resources.csv"
RESOURCES_PLOT = "resources.png"


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """metadata.json, checked: its labels must match num_classes."""
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} is not a model directory: {METADATA_FILE} is missing")
    try:
        meta = json.loads(path.read_text())
        labels = meta["labels"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path} is malformed: {exc}") from None
    if not labels or len(labels) != meta.get("num_classes", len(labels)):
        raise ModelError(f"{path}: labels do not match num_classes")
    return meta
