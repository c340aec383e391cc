"""multi-model-server's entry point: `handle(data, context)` for every worker.

The request pipeline is three lines (input -> predict -> output); every error
maps to its HTTP status by exception class and to a JSON body, and the worker
goes on serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from http import HTTPStatus
from pathlib import Path
from typing import Any

from dogbreed.core import settings
from dogbreed.core.errors import DogbreedError
from dogbreed.core.serve_settings import ServeSettings
from dogbreed.serve.codec import input_fn, model_fn, output_fn, predict_fn
from dogbreed.serve.mms import Runtime
from dogbreed.serve.worker_load import WorkerLoad

log = logging.getLogger("dogbreed.serve.server")
# One worker's state, set once when MMS asks it to load the model.
_model = None
_opts: ServeSettings | None = None  # the server's settings, as it handed them down
_inflight: WorkerLoad | None = None  # this worker's "handling a request" flag


def _warnings_to_stderr() -> None:
    """MMS logs a worker's stdout at INFO and its stderr at WARN: our warnings and
    tracebacks go to stderr, so that they show when the server runs quiet (-q)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    info = logging.StreamHandler(sys.stdout)
    info.addFilter(lambda record: record.levelno < logging.WARNING)
    log.addHandler(info)


def _in_flight():
    """Hold this worker's flag for the whole request: the server drains on them."""
    return _inflight.busy() if _inflight is not None else contextlib.nullcontext()


def _header(context: Any, name: str) -> str | None:
    props = context.request_processor[0].get_request_properties() or {}
    for key, value in props.items():
        if key.lower() == name:
            return value
    return None


def _error(context: Any, status: int, message: str) -> list[str]:
    context.set_response_status(code=status, phrase=HTTPStatus(status).phrase)
    context.set_response_content_type(0, "application/json")
    return [json.dumps({"error": message})]


def handle(data: list[dict] | None, context: Any) -> list[str] | None:
    """MMS's entry point: load the model (data None), else answer one request."""
    global _model, _opts, _inflight
    if data is None:  # MMS calls this once at worker start: load the model
        _warnings_to_stderr()
        _opts = ServeSettings.read()
        folder = os.environ.get(settings.RUNTIME_DIR)  # absent under someone else's MMS
        runtime = Runtime(Path(folder)) if folder else None
        running = runtime.running if runtime else None
        _model = model_fn(context.system_properties["model_dir"], _opts, running)
        _inflight = WorkerLoad(runtime.inflight) if runtime else None
        log.info("model loaded: %d classes, %s", len(_model.labels), _model.precision)
        return None
    with _in_flight():
        return _answer(data, context)


def _answer(data: list[dict], context: Any) -> list[str]:
    try:
        request = input_fn(data[0].get("body") or b"", _header(context, "content-type"), _opts)
        answer, content_type = output_fn(predict_fn(request, _model), _header(context, "accept"))
    except DogbreedError as exc:
        return _error(context, exc.http_status, str(exc))
    except Exception:  # a bug, not the client's fault: log it, answer 500, keep serving
        log.exception("inference failed")
        return _error(context, 500, "internal error during inference")
    context.set_response_content_type(0, content_type)
    return [answer]
