"""Model-directory artifacts: model.pth, model.onnx (checked against torch), metadata.json."""

from __future__ import annotations

import contextlib
import io
import logging
import platform
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed import __version__
from dogbreed.core.errors import ModelError
from dogbreed.core.modeldir import (
    INPUT_NAME,
    METADATA_FILE,
    ONNX_FILE,
    OUTPUT_NAME,
    STATE_DICT_FILE,
    write_json,
)
from dogbreed.core.preprocess import CROP, IMAGENET_MEAN, IMAGENET_STD, RESIZE
from dogbreed.train.data import display_label
from dogbreed.train.models import Classifier

ONNX_TOLERANCE = 1e-4
log = logging.getLogger(__name__)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "dogbreed": __version__}
    for name in ("torch", "torchvision", "onnx", "onnxruntime", "numpy", "pillow"):
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            versions[name] = importlib_metadata.version(name)
    return versions


def export_onnx(model: Classifier, path: Path) -> None:
    """Export with a dynamic batch axis, then prove ONNX Runtime agrees with torch."""
    model = model.cpu().eval()
    model.drop_fast_backbone()
    example = torch.randn(2, 3, CROP, CROP)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    check_onnx(model, path)


def check_onnx(model: Classifier, path: Path, batch: int = 3) -> float:
    """Max |onnx - torch| on a random batch of another size than the export's."""
    import onnxruntime as ort

    x = torch.randn(batch, 3, CROP, CROP, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    diff = float(np.abs(got - expected).max())
    # fp32 rounding grows with the logits' size (a random frozen backbone gives logits in
    # the hundreds): the tolerance is relative to the largest logit, absolute below 1.
    tolerance = ONNX_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    if diff > tolerance:
        raise ModelError(
            f"exported ONNX model differs from torch by {diff:.2e} (tolerance {tolerance:.1e})"
        )
    log.info("onnx export verified: max |onnx - torch| = %.2e", diff)
    return diff


def write_model_dir(
    model: Classifier,
    model_dir: Path,
    classes: Sequence[str],
    arch: str,
    metrics: dict[str, Any],
    config: dict[str, Any],
) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().to(memory_format=torch.contiguous_format)  # plain layout in the files
    torch.save(model.state_dict(), model_dir / STATE_DICT_FILE)
    export_onnx(model, model_dir / ONNX_FILE)
    write_json(
        model_dir / METADATA_FILE,
        {
            "format_version": 1,
            "arch": arch,
            "num_classes": len(classes),
            "classes": list(classes),
            "labels": [display_label(c) for c in classes],
            "input": {
                "name": INPUT_NAME,
                "layout": "NCHW",
                "size": CROP,
                "resize": RESIZE,
                "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD),
            },
            "output": {"name": OUTPUT_NAME, "kind": "logits"},
            "files": {"onnx": ONNX_FILE, "state_dict": STATE_DICT_FILE},
            "metrics": metrics,
            "config": config,
            "versions": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )
