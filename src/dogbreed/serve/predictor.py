"""Prediction with ONNX Runtime from a model directory; no torch.

Used by `dogbreed predict` and by the endpoint handler, so both answer alike.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError, ModelError
from dogbreed.core.hardware import int8_native
from dogbreed.core.modeldir import ONNX_FILE, read_metadata
from dogbreed.core.onnxrt import open_session
from dogbreed.core.preprocess import eval_input
from dogbreed.serve.worker_load import WorkerLoad


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc only; a no-op elsewhere).

    Loading a model frees about as much as it keeps (the parsed ONNX file, the
    weights before their reordering), but glibc keeps those pages: ResNet-50
    takes 245 MB resident per session before this, 115 MB after.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def choose_model_file(
    model_dir: Path, meta: dict[str, Any], precision: str | None
) -> tuple[Path, str]:
    """(model.onnx, "fp32") or (model.int8.onnx, "int8"), as `precision`
    (default $DOGBREED_PRECISION) says.

    auto: the int8 model where training kept one and this CPU has int8 dot
    products, else fp32. int8 on a model without one is an error.
    """
    try:
        precision = settings.precision_choice(precision)
    except ConfigError as exc:  # the model cannot be loaded as asked
        raise ModelError(str(exc)) from None
    files = meta.get("files", {})
    int8 = files.get("onnx_int8")
    if precision == "int8" and not int8:
        raise ModelError(
            f"{model_dir} has no int8 model (train with --int8 true, or see "
            f"metadata.json 'int8' for why it was not kept)"
        )
    if precision == "int8" or (precision == "auto" and int8 and int8_native()):
        return model_dir / int8, "int8"
    return model_dir / files.get("onnx", ONNX_FILE), "fp32"


def _arena_shrinking():
    """Run options that hand the CPU arena's unused memory back at the end of a run."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


class Predictor:
    """An ONNX Runtime session plus the labels of its classes.

    Under a model server with several workers, `load` tells whether sibling
    workers are busy; when they are, inference runs on a second session with
    `crowded_threads` threads (this worker's share of the cores) instead.
    """

    def __init__(
        self,
        model_dir: str | Path,
        threads: int | None = None,
        crowded_threads: int | None = None,
        load: WorkerLoad | None = None,
        precision: str | None = None,
        spin: bool = False,
    ) -> None:
        model_dir = Path(model_dir)
        self.meta = read_metadata(model_dir)
        self.labels: list[str] = self.meta["labels"]
        onnx_path, self.precision = choose_model_file(model_dir, self.meta, precision)
        self.model_path = onnx_path
        if not onnx_path.is_file():
            raise ModelError(f"{onnx_path} is missing")
        self.session = open_session(onnx_path, threads, spin)
        outputs = self.session.get_outputs()
        if outputs[0].shape[-1] != len(self.labels):
            raise ModelError(
                f"{onnx_path} has {outputs[0].shape[-1]} outputs but the metadata "
                f"lists {len(self.labels)} labels"
            )
        self.input_name = self.session.get_inputs()[0].name
        self._shrink = _arena_shrinking()
        self.load = load
        self.crowded_session = None
        if load is not None and crowded_threads:
            self.crowded_session = open_session(onnx_path, crowded_threads, spin)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 -> (N, classes) softmax probabilities."""
        if self.crowded_session is None:  # no load to watch (see __init__)
            return self._run(self.session, batch)
        with self.load.busy():
            crowded = self.load.others_busy() > 0
            return self._run(self.crowded_session if crowded else self.session, batch)

    def warm_up(self) -> None:
        """One inference per session: the first run allocates and plans."""
        batch = np.zeros((1, 3, 224, 224), dtype=np.float32)
        for session in filter(None, (self.session, self.crowded_session)):
            self._run(session, batch)
        trim_heap()

    def _run(self, session, batch: np.ndarray) -> np.ndarray:
        # A batch grows ONNX Runtime's memory arena (ResNet-18, 64 images: 112 -> 478 MB)
        # and the arena keeps it: give it back after any run of more than one image.
        options = self._shrink if len(batch) > 1 else None
        logits = session.run(None, {self.input_name: batch}, options)[0]
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
        batch = np.stack([eval_input(i) for i in images])
        return [self.answer(p, k) for p in self.probabilities(batch)]
