"""Prediction with ONNX Runtime from a model directory; no torch.

Used by `dogbreed predict` and by the endpoint handler, so both answer alike.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.errors import ModelError
from dogbreed.preprocess import eval_array, open_image

METADATA_FILE = "metadata.json"
ONNX_FILE = "model.onnx"
STATE_DICT_FILE = "model.pth"
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
THREADS_ENV = "DOGBREED_ORT_THREADS"
SPIN_ENV = "DOGBREED_ORT_SPIN"


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def default_threads() -> int:
    if os.environ.get(THREADS_ENV):
        return max(1, int(os.environ[THREADS_ENV]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


def read_metadata(model_dir: Path) -> dict[str, Any]:
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


class Predictor:
    """An ONNX Runtime session plus the labels of its classes."""

    def __init__(self, model_dir: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        model_dir = Path(model_dir)
        self.meta = read_metadata(model_dir)
        self.labels: list[str] = self.meta["labels"]
        onnx_path = model_dir / self.meta.get("files", {}).get("onnx", ONNX_FILE)
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path} is missing")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or default_threads()
        opts.inter_op_num_threads = 1
        # Idle ORT threads spin for a while after each run; with several server
        # workers on the same cores that spinning steals the busy worker's CPU
        # (measured: c=1 p50 100 ms spinning vs 60 ms not). Off unless asked for.
        spin = os.environ.get(SPIN_ENV, "0")
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
        try:
            self.session = ort.InferenceSession(
                str(onnx_path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(f"cannot load {onnx_path}: {exc}") from None
        outputs = self.session.get_outputs()
        if outputs[0].shape[-1] != len(self.labels):
            raise ModelError(
                f"{onnx_path} has {outputs[0].shape[-1]} outputs but the metadata "
                f"lists {len(self.labels)} labels"
            )
        self.input_name = self.session.get_inputs()[0].name

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, classes) softmax probabilities."""
        logits = self.session.run(None, {self.input_name: batch})[0]
        return softmax(logits.astype(np.float64)).astype(np.float32)

    def top_k(self, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
        """One image's best k classes, best first: {label, index, score}."""
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-probs, kind="stable")[:k]
        return [
            {"label": self.labels[i], "index": int(i), "score": round(float(probs[i]), 6)}
            for i in order
        ]

    def answer(self, probs: np.ndarray, k: int) -> dict[str, Any]:
        """The response for one image: the best class plus its top k."""
        top = self.top_k(probs, k)
        return {**top[0], "top_k": top}

    def predict_images(self, images: Sequence[bytes | str | Path], k: int = 5) -> list[dict]:
        batch = np.stack([eval_array(open_image(i)) for i in images])
        return [self.answer(p, k) for p in self.probabilities(batch)]
