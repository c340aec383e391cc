"""multi-model-server's entry point: `handle(data, context)` for every worker.

The request pipeline is three lines (input -> predict -> output); every error
maps to its HTTP status by exception class and to a JSON body, and the worker
goes on serving.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from dogbreed.core.errors import DogbreedError
from dogbreed.serve.codec import input_fn, model_fn, output_fn, predict_fn

log = logging.getLogger("dogbreed.serve.server")
_model = None


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
    global _model
    if data is None:  # MMS calls this once at worker start: load the model
        _model = model_fn(context.system_properties["model_dir"])
        log.info("model loaded: %d classes, %s", len(_model.labels), _model.precision)
        return None
    try:
        request = input_fn(data[0].get("body") or b"", _header(context, "content-type"))
        answer, content_type = output_fn(predict_fn(request, _model), _header(context, "accept"))
    except DogbreedError as exc:
        return _error(context, exc.http_status, str(exc))
    except Exception:  # a bug, not the client's fault: log it, answer 500, keep serving
        log.exception("inference failed")
        return _error(context, 500, "internal error during inference")
    context.set_response_content_type(0, content_type)
    return [answer]
