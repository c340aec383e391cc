"""The endpoint's handler functions, named as the sagemaker-inference toolkit names them.

    model_fn(model_dir)                 -> Predictor (ONNX Runtime, warmed up; no torch)
    input_fn(body, content_type)        -> Request (decoded, preprocessed images)
    predict_fn(request, model)          -> list of answers
    output_fn(answers, accept)          -> (JSON text, content type)

Bodies: one image's bytes, a JSON object (`{"image": "<base64>"}` or
`{"instances": [...]}`), or JSON Lines (`application/jsonlines`, one
`{"image": "<base64>"}` a line): what a Batch Transform job with SplitType Line
sends, several lines a request with BatchStrategy MultiRecord. JSON Lines are
answered line for line in order, one JSON answer a line; a bad record fails the
whole request (any failed invocation fails the job), its error naming the line.

model_fn and input_fn take the server's ServeSettings as an optional last
argument (the handler service passes the one it parsed when the worker
started; without it they are read from the environment).

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

from dogbreed.core.errors import (
    ImageError,
    NotAcceptableError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from dogbreed.core.hardware import usable_cores
from dogbreed.core.preprocess import check_pixels, eval_input, image_size
from dogbreed.core.serve_settings import ServeSettings
from dogbreed.core.settings import MAX_REQUEST_PIXELS
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.worker_load import WorkerLoad

JSON = "application/json"
JSON_LINES = "application/jsonlines"  # what SageMaker's SDK sends and expects
JSON_LINES_TYPES = (JSON_LINES, "application/jsonl", "application/x-jsonlines")
# Images a JSON Lines request decodes and runs at once (at most DOGBREED_MAX_INSTANCES):
# on one int8 ResNet-50 thread, batches of 8-16 took about a tenth less per image than 64.
LINES_CHUNK = 16
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image", "application/octet-stream")


@dataclass(frozen=True)
class Record:
    """One JSON Lines record: its line in the body (from 1), its image and its top_k."""

    line: int
    image: bytes
    top_k: int
    pixels: int = 0  # width x height from the image's header


class Lines(list):
    """The answers to a JSON Lines request, one per record in order."""


@dataclass
class Request:
    """A decoded request: a (N, 3, 224, 224) batch and how to answer it.

    JSON Lines: `records` instead of a batch, decoded and run in chunks by
    predict_fn (at most max_instances images and max_request_pixels pixels at a
    time), so that a request as large as the payload limit allows never holds
    more decoded images than a JSON batch does.
    """

    batch: np.ndarray | None
    top_k: int
    single: bool
    records: list[Record] | None = None
    opts: ServeSettings | None = None


def crowded_threads(threads: int, opts: ServeSettings) -> int | None:
    """Threads per worker while the other workers are busy too: its share of the cores.

    None (one session, all threads, always) with one worker or when
    DOGBREED_SHARE_CORES=0.
    """
    if (opts.workers or 1) < 2 or not opts.share_cores:
        return None
    share = max(1, threads // opts.workers)
    return share if share < threads else None


def model_fn(
    model_dir: str | Path, opts: ServeSettings | None = None, running: Path | None = None
) -> Predictor:
    """Load model.onnx + metadata.json and run one warm-up inference per session.

    `running`: the folder where the server's workers flag an inference (see
    worker_load.py); without one, a worker always runs on all its threads.
    """
    opts = opts or ServeSettings.read()
    threads = opts.ort_threads or usable_cores()
    crowded = crowded_threads(threads, opts) if running is not None else None
    load = WorkerLoad(running) if crowded and running is not None else None
    predictor = Predictor(model_dir, threads, crowded, load, opts.precision, opts.ort_spin)
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


def _images_from_json(body: bytes | str, opts: ServeSettings) -> tuple[list[bytes], Any, bool]:
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
        limit = opts.max_instances
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


def _top_k(raw: Any, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise RequestError(f'"top_k" must be a positive integer, got {raw!r}')
    return raw


def input_fn(
    input_data: bytes | str, content_type: str | None, opts: ServeSettings | None = None
) -> Request:
    """Decode the body into a preprocessed batch (the evaluation transform of training)."""
    opts = opts or ServeSettings.read()
    limit = opts.max_payload_bytes
    body = input_data.encode() if isinstance(input_data, str) else input_data or b""
    if len(body) > limit:  # before bytes() copies it: a body up to twice the limit gets here
        raise PayloadTooLargeError(f"request of {len(body)} bytes is over the {limit}-byte limit")
    body = bytes(body)
    media = _media_type(content_type)
    if media in JSON_LINES_TYPES:
        records = [_checked(r, opts) for r in parse_json_lines(body, opts.top_k)]
        return Request(None, opts.top_k, False, records, opts)
    if media == JSON:
        images, top_k, single = _images_from_json(body, opts)
    elif media in IMAGE_TYPES:
        images, top_k, single = [body], None, True
    else:
        raise UnsupportedMediaTypeError(
            f"unsupported content type '{media}'; send one of {', '.join(IMAGE_TYPES)}, "
            f"{JSON} or {JSON_LINES}"
        )
    with _naming_the_instance(single) as where:
        check_pixel_budget(images, opts, where)
        arrays = []
        for i, data in enumerate(images):
            where[0] = i
            arrays.append(eval_input(data, opts.max_pixels))
    return Request(np.stack(arrays), _top_k(top_k, opts.top_k), single)


def parse_json_lines(body: bytes, default_top_k: int) -> list[Record]:
    """JSON Lines records: one `{"image": "<base64>", "top_k": K?}` object a line.

    Blank lines (a body's final newline, SageMaker's record separators) are no
    records; line numbers count every line of the body, from 1. Raises RequestError
    naming the first bad line, and nothing else for any bytes.
    """
    records = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        text = raw.strip()
        if not text:
            continue
        where = f"line {number}"
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"{where}: malformed JSON: {exc}") from None
        except RecursionError:
            raise RequestError(f"{where}: malformed JSON: nested too deeply") from None
        if not isinstance(doc, dict) or "image" not in doc:
            if isinstance(doc, dict) and ("url" in doc or "s3_uri" in doc):
                raise RequestError(f"{where}: the endpoint does not fetch URLs; send the image")
            raise RequestError(f'{where}: each line must be an object {{"image": "<base64>"}}')
        try:
            top_k = _top_k(doc.get("top_k"), default_top_k)
        except RequestError as exc:
            raise RequestError(f"{where}: {exc}") from None
        records.append(Record(number, _decode_b64(doc["image"], f"{where}: image"), top_k))
    if not records:
        raise RequestError('no records: send one {"image": "<base64>"} object a line')
    return records


def _checked(record: Record, opts: ServeSettings) -> Record:
    """The record with its pixel count, from its header (nothing decoded): a file that is
    no image, or over the per-image limit, fails the request here, naming its line."""
    try:
        width, height = image_size(record.image)
        check_pixels(width, height, opts.max_pixels)
    except ImageError as exc:
        exc.args = (f"line {record.line}: {exc}",)
        raise
    return Record(record.line, record.image, record.top_k, width * height)


def _chunks(records: list[Record], opts: ServeSettings):
    """Runs of records to decode and infer together: at most LINES_CHUNK (and
    max_instances) images and max_request_pixels pixels (a larger image goes alone)."""
    size = min(LINES_CHUNK, opts.max_instances)
    chunk: list[Record] = []
    pixels = 0
    for record in records:
        if chunk and (len(chunk) >= size or pixels + record.pixels > opts.max_request_pixels):
            yield chunk
            chunk, pixels = [], 0
        chunk.append(record)
        pixels += record.pixels
    if chunk:
        yield chunk


def _predict_lines(request: Request, model: Predictor) -> Lines:
    opts = request.opts or ServeSettings.read()
    answers = Lines()
    for chunk in _chunks(request.records or [], opts):
        arrays = []
        for record in chunk:
            try:
                arrays.append(eval_input(record.image, opts.max_pixels))
            except ImageError as exc:
                exc.args = (f"line {record.line}: {exc}",)
                raise
        probs = model.probabilities(np.stack(arrays))
        answers.extend(model.answer(p, r.top_k) for p, r in zip(probs, chunk, strict=True))
    return answers


def check_pixel_budget(images: list[bytes], opts: ServeSettings, where: list[int]) -> None:
    """Refuse an image over the per-image limit, or a request whose images hold more
    pixels together than the budget, from their headers before decoding any: many
    small files can expand to gigabytes."""
    max_pixels, budget = opts.max_pixels, opts.max_request_pixels
    total = 0
    for i, data in enumerate(images):
        where[0] = i
        width, height = image_size(data)
        check_pixels(width, height, max_pixels)
        total += width * height
        if total > budget:
            raise PayloadTooLargeError(
                f"the request's images hold over {budget} pixels together "
                f"({MAX_REQUEST_PIXELS}); send fewer or smaller images"
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


def predict_fn(request: Request, model: Predictor) -> dict[str, Any] | Lines:
    """One batched inference; softmax probabilities turned into labelled answers."""
    if request.records is not None:
        return _predict_lines(request, model)
    probs = model.probabilities(request.batch)
    answers = [model.answer(p, request.top_k) for p in probs]
    return answers[0] if request.single else {"predictions": answers}


def output_fn(prediction: dict[str, Any] | Lines, accept: str | None) -> tuple[str, str]:
    """JSON, or JSON Lines: a JSON Lines request's answer unless Accept asks for JSON,
    or any answer when Accept asks for JSON Lines (one line per image)."""
    lines = isinstance(prediction, Lines)
    media = _media_type(accept) if accept else "*/*"
    if media in ("*/*", "application/*"):
        media = JSON_LINES if lines else JSON
    if media in JSON_LINES_TYPES:
        if not lines:
            prediction = prediction.get("predictions", [prediction])
        return "\n".join(json.dumps(answer) for answer in prediction), JSON_LINES
    if media != JSON:
        raise NotAcceptableError(f"can only answer {JSON} or {JSON_LINES}, not '{media}'")
    return json.dumps({"predictions": list(prediction)} if lines else prediction), JSON
