"""Unit-tier fixtures: small, fast and in-process (no Docker, no model server, no moto)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dogbreed.core.modeldir import METADATA_FILE, ONNX_FILE

TINY_LABELS = ["Red", "Green", "Blue"]


def write_tiny_model(model_dir: Path, labels: list[str] = TINY_LABELS) -> Path:
    """A real ONNX model directory in the training export's format, made without torch.

    input (N, 3, 224, 224) -> GlobalAveragePool -> (N, 3) -> Gemm -> logits (N, classes):
    it answers by the image's dominant colour channel, so its answers can be checked.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    classes = len(labels)
    weight = np.zeros((3, classes), dtype=np.float32)
    for c in range(min(3, classes)):
        weight[c, c] = 10.0
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("Gemm", ["features", "weight", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(np.zeros(classes, dtype=np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    model_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, model_dir / ONNX_FILE)
    meta = {"labels": labels, "num_classes": classes, "files": {"onnx": ONNX_FILE}}
    (model_dir / METADATA_FILE).write_text(json.dumps(meta))
    return model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")
