"""ONNX Runtime sessions on the CPU: one way to open them, for serving and for training's
int8 check alike (training must not import serving)."""

from __future__ import annotations

from pathlib import Path

from dogbreed.core.errors import ModelError
from dogbreed.core.hardware import usable_cores


def open_session(onnx_path: Path, threads: int | None = None, spin: bool = False):
    """An ONNX Runtime CPU session on `threads` threads (None: every usable core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or usable_cores()
    opts.inter_op_num_threads = 1
    # Idle ORT threads spin for a while after each run; with several server
    # workers on the same cores that spinning steals the busy worker's CPU
    # (measured: c=1 p50 100 ms spinning vs 60 ms not). Off unless asked for.
    flag = "1" if spin else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", flag)
    opts.add_session_config_entry("session.inter_op.allow_spinning", flag)
    try:
        return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"cannot load {onnx_path}: {exc}") from None
