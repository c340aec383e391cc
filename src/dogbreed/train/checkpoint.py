"""Per-epoch checkpoints: write atomically, read back without running any code.

SageMaker syncs the checkpoint directory to S3 and restores it on a restarted
(e.g. spot) job, so a run resumes from the last finished epoch wherever it runs.
Whoever can write that prefix must not be able to run code in the next job: a
checkpoint holds only tensors and plain types (the RNG states converted), and
is read with `torch.load(weights_only=True)`, which refuses anything else.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.core.errors import ConfigError

LAST = "last.pt"
BEST = "best.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG the run draws from, as tensors and plain types."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)  # older files
    np.random.set_state((kind, keys.astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a kill never leaves half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Any] | None:
    """The checkpoint at path, or None when there is none; never executes code from it.

    A file that is not one of ours (corrupt, truncated, or holding objects other
    than tensors and plain types) is one clear error, not a silent fresh start.
    """
    if not path.is_file():
        return None
    try:
        with torch.serialization.safe_globals(_numpy_arrays()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"checkpoint {path} cannot be read safely ({type(exc).__name__}); it is corrupt or not "
            "a dogbreed checkpoint: delete it (or pass another --checkpoint-dir) to start over"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ConfigError(f"checkpoint {path} is not a dogbreed checkpoint (no model state)")
    return ckpt


def _numpy_arrays() -> list:
    """What unpickling a plain numpy array needs (it rebuilds data; it runs no code):
    checkpoints written before the RNG states were converted hold numpy's as an array."""
    from numpy import dtypes
    from numpy._core import multiarray

    return [multiarray._reconstruct, np.ndarray, np.dtype, dtypes.UInt32DType]
