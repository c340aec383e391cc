"""The endpoint's handler functions, named as the sagemaker-inference toolkit names them.

    model_fn(model_dir)                 -> Predictor (ONNX Runtime, warmed up; no torch)
    input_fn(body, content_type)        -> Request (decoded, preprocessed images)
    predict_fn(request, model)          -> list of answers
    output_fn(answers, accept)          -> (JSON text, content type)

Errors are DogbreedError subclasses carrying their HTTP status; the handler
service maps them to `{"error": ...}` responses. The server never fetches URLs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.core import settings
from dogbreed.core.errors import (
    ImageError,
    NotAcceptableError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from dogbreed.core.preprocess import check_pixels, eval_input, image_size
from dogbreed.serve.predictor import Predictor, default_threads
from dogbreed.serve.worker_load import WorkerLoad

JSON = "application/json"
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")


def max_payload_bytes() -> int:
    """Request size limit; InvokeEndpoint's own cap (6 MB) by default."""
    return int(settings.env_float(settings.MAX_PAYLOAD_MB) * 1024 * 1024)


@dataclass
class Request:
    """A decoded request: a (N, 3, 224, 224) batch and how to answer it."""

    batch: np.ndarray
    top_k: int
    single: bool


def crowded_threads(threads: int) -> int | None:
    """Threads per worker while the other workers are busy too: its share of the cores.

    None (one session, all threads, always) with one worker or when
    DOGBREED_SHARE_CORES=0.
    """
    workers = settings.env_int(settings.MODEL_SERVER_WORKERS, minimum=1)
    if workers < 2 or not settings.env_flag(settings.SHARE_CORES):
        return None
    share = max(1, threads // workers)
    return share if share < threads else None


def model_fn(model_dir: str | Path) -> Predictor:
    """Load model.onnx + metadata.json and run one warm-up inference per session."""
    threads = default_threads()
    crowded = crowded_threads(threads)
    load = WorkerLoad() if crowded else None
    predictor = Predictor(model_dir, threads, crowded, load)
    predictor.warm_up()
    return predictor


def _media_type(content_type: str | None) -> str:
    return (content_type or "application/octet-stream").split(";")[0].strip().lower()


def _decode_b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"{where} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where} is not valid base64: {exc}") from None


def _images_from_json(body: bytes | str) -> tuple[list[bytes], Any, bool]:
    """(image bytes, requested top_k, single?) from a JSON body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"malformed JSON: {exc}") from None
    except RecursionError:  # a deeply nested body: the parser's own stack limit
        raise RequestError("malformed JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError('JSON body must be an object: {"image": ...} or {"instances": [...]}')
    if "url" in doc or "s3_uri" in doc:
        raise RequestError(
            "the endpoint does not fetch URLs; send the image itself "
            '(raw bytes or {"image": "<base64>"})'
        )
    if "instances" in doc:
        instances = doc["instances"]
        if not isinstance(instances, list) or not instances:
            raise RequestError('"instances" must be a non-empty list of {"image": "<base64>"}')
        limit = settings.env_int(settings.MAX_INSTANCES, minimum=1)
        if len(instances) > limit:
            raise PayloadTooLargeError(f"{len(instances)} instances, at most {limit} per request")
        images = []
        for i, inst in enumerate(instances):
            if not isinstance(inst, dict) or "image" not in inst:
                raise RequestError(f'instances[{i}] must be an object with an "image" field')
            images.append(_decode_b64(inst["image"], f"instances[{i}].image"))
        return images, doc.get("top_k"), False
    if "image" not in doc:
        raise RequestError('JSON body needs "image" (base64) or "instances"')
    return [_decode_b64(doc["image"], "image")], doc.get("top_k"), True


def _top_k(raw: Any) -> int:
    if raw is None:
        return settings.env_int(settings.TOP_K, minimum=1)
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise RequestError(f'"top_k" must be a positive integer, got {raw!r}')
    return raw


def input_fn(input_data: bytes | str, content_type: str | None) -> Request:
    """Decode the body into a preprocessed batch (the evaluation transform of training)."""
    body = input_data.encode() if isinstance(input_data, str) else bytes(input_data or b"")
    limit = max_payload_bytes()
    if len(body) > limit:
        raise PayloadTooLargeError(f"request of {len(body)} bytes is over the {limit}-byte limit")
    media = _media_type(content_type)
    if media == JSON:
        images, top_k, single = _images_from_json(body)
    elif media in IMAGE_TYPES:
        images, top_k, single = [body], None, True
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported content type '{media}'; send one of {', '.join(IMAGE_TYPES)} or {JSON}"
        )
    max_pixels = settings.env_int(settings.MAX_PIXELS, minimum=1)
    with _naming_the_instance(single) as where:
        check_pixel_budget(images, max_pixels, where)
        arrays = []
        for i, data in enumerate(images):
            where[0] = i
            arrays.append(eval_input(data, max_pixels))
    return Request(np.stack(arrays), _top_k(top_k), single)


def check_pixel_budget(images: list[bytes], max_pixels: int, where: list[int]) -> None:
    """Refuse an image over the per-image limit, or a request whose images hold more
    pixels together than the budget, from their headers before decoding any: many
    small files can expand to gigabytes."""
    budget = settings.env_int(settings.MAX_REQUEST_PIXELS, minimum=1)
    total = 0
    for i, data in enumerate(images):
        where[0] = i
        width, height = image_size(data)
        check_pixels(width, height, max_pixels)
        total += width * height
        if total > budget:
            raise PayloadTooLargeError(
                f"the request's images hold over {budget} pixels together "
                f"({settings.MAX_REQUEST_PIXELS}); send fewer or smaller images"
            )


@contextlib.contextmanager
def _naming_the_instance(single: bool):
    """Prefix an image error with the batch position it came from."""
    where = [0]
    try:
        yield where
    except ImageError as exc:
        if not single:
            exc.args = (f"instances[{where[0]}]: {exc}",)
        raise


def predict_fn(request: Request, model: Predictor) -> dict[str, Any]:
    """One batched inference; softmax probabilities turned into labelled answers."""
    probs = model.probabilities(request.batch)
    answers = [model.answer(p, request.top_k) for p in probs]
    return answers[0] if request.single else {"predictions": answers}


def output_fn(prediction: dict[str, Any], accept: str | None) -> tuple[str, str]:
    media = _media_type(accept) if accept else JSON
    if media not in (JSON, "*/*", "application/*"):
        raise NotAcceptableError(f"can only answer {JSON}, not '{media}'")
    return json.dumps(prediction), JSON
