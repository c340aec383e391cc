"""The request pipeline in process: input_fn -> predict_fn -> output_fn, errors by class."""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dogbreed.core.errors import (
    DogbreedError,
    ImageError,
    ImageTooLargeError,
    NotAcceptableError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
    http_status,
)
from dogbreed.serve.codec import input_fn, output_fn, predict_fn
from dogbreed.serve.predictor import Predictor

COLOURS = {"Red": (220, 20, 20), "Green": (20, 200, 30), "Blue": (10, 30, 230)}


def jpeg(colour: tuple[int, int, int], size=(320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(tiny_model_dir) -> Predictor:
    return Predictor(tiny_model_dir, threads=1)


def answer(model: Predictor, body: bytes | str, content_type: str, accept: str | None = None):
    text, media = output_fn(predict_fn(input_fn(body, content_type), model), accept)
    assert media == "application/json"
    return json.loads(text)


@pytest.mark.parametrize("label", sorted(COLOURS))
def test_raw_jpeg_gets_its_label(model, label):
    got = answer(model, jpeg(COLOURS[label]), "image/jpeg")
    assert got["label"] == label and got["index"] == model.labels.index(label)
    assert len(got["top_k"]) == 3 and got["top_k"][0]["label"] == label


def test_json_batch_keeps_order_and_top_k(model):
    order = ["Blue", "Red", "Green"]
    body = json.dumps(
        {
            "instances": [{"image": base64.b64encode(jpeg(COLOURS[c])).decode()} for c in order],
            "top_k": 2,
        }
    )
    got = answer(model, body, "application/json; charset=utf-8")
    assert [p["label"] for p in got["predictions"]] == order
    assert all(len(p["top_k"]) == 2 for p in got["predictions"])


@pytest.mark.parametrize(
    "body,content_type,error,status",
    [
        (b"", "image/jpeg", ImageError, 400),
        (b"not an image", "image/jpeg", ImageError, 400),
        (b"{", "application/json", RequestError, 400),
        (b"[1, 2]", "application/json", RequestError, 400),
        (b'{"url": "http://example.invalid/x.jpg"}', "application/json", RequestError, 400),
        (b'{"image": "***"}', "application/json", RequestError, 400),
        (b'{"instances": []}', "application/json", RequestError, 400),
        (b'{"instances": [1]}', "application/json", RequestError, 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", RequestError, 400),
        (b"x", "text/plain", UnsupportedMediaTypeError, 415),
    ],
)
def test_bad_requests_map_to_their_status(model, body, content_type, error, status):
    with pytest.raises(error) as info:
        predict_fn(input_fn(body, content_type), model)
    assert http_status(info.value) == status


def test_limits(model, monkeypatch):
    monkeypatch.setenv("DOGBREED_MAX_PAYLOAD_MB", "0.001")
    with pytest.raises(PayloadTooLargeError):
        input_fn(b"x" * 2000, "image/jpeg")
    monkeypatch.delenv("DOGBREED_MAX_PAYLOAD_MB")
    monkeypatch.setenv("DOGBREED_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLargeError) as info:
        input_fn(jpeg(COLOURS["Red"]), "image/jpeg")
    assert http_status(info.value) == 413
    with pytest.raises(NotAcceptableError):
        output_fn({"label": "Red"}, "text/html")


def test_a_malformed_setting_is_a_config_error_not_a_crash(monkeypatch):
    monkeypatch.setenv("DOGBREED_TOP_K", "many")
    with pytest.raises(DogbreedError, match="DOGBREED_TOP_K"):
        input_fn(jpeg(COLOURS["Red"]), "image/jpeg")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode())),
    content_type=st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "application/json",
            "application/octet-stream",
            "text/csv",
            None,
        ]
    ),
)
def test_any_body_is_an_answer_or_a_client_error(model, body, content_type):
    """Random bodies and content types: a prediction, or a DogbreedError with a 4xx status."""
    try:
        predict_fn(input_fn(body, content_type), model)
    except DogbreedError as exc:
        assert 400 <= http_status(exc) < 500, exc


def encoded_images() -> dict[str, bytes]:
    """One small photo-like image in every format a client might send."""
    import numpy as np

    pixels = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    out = {}
    for fmt, mode in [("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("WEBP", "RGB"),
                      ("BMP", "RGB"), ("TIFF", "RGB"), ("PNG", "I;16")]:  # fmt: skip
        buf = io.BytesIO()
        img.convert(mode).save(buf, fmt)
        out[f"{fmt}-{mode}"] = buf.getvalue()
    return out


ENCODED = encoded_images()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(ENCODED)),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
    as_json=st.booleans(),
)
def test_truncated_and_corrupted_images_are_answers_or_client_errors(
    model, name, cut, flips, as_json
):
    """Real encodings, cut short and with bytes overwritten (headers included): never a 5xx."""
    data = bytearray(ENCODED[name][: max(1, int(len(ENCODED[name]) * cut))])
    for where, value in flips:
        data[min(len(data) - 1, int(len(data) * where))] = value
    body: bytes = bytes(data)
    content_type = "image/jpeg"
    if as_json:
        body = json.dumps({"image": base64.b64encode(body).decode()}).encode()
        content_type = "application/json"
    try:
        predict_fn(input_fn(body, content_type), model)
    except DogbreedError as exc:
        assert 400 <= http_status(exc) < 500, exc


def test_a_pixel_bomb_batch_is_refused_from_the_headers(model):
    """Small files that decode to gigabytes: 413 before any is decoded."""
    import time

    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.zeros((6000, 6000), dtype=np.uint16)).save(buf, "PNG")  # 36 MP, 16-bit
    png = base64.b64encode(buf.getvalue()).decode()
    body = json.dumps({"instances": [{"image": png}] * 3})
    assert len(body) < 1_000_000
    start = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match="DOGBREED_MAX_REQUEST_PIXELS"):
        input_fn(body, "application/json")
    assert time.perf_counter() - start < 1.0
    single = predict_fn(
        input_fn(json.dumps({"instances": [{"image": png}]}), "application/json"), model
    )
    assert len(single["predictions"]) == 1  # one of them alone is within the budget


def test_a_bad_instance_is_named_by_its_position(model):
    good = base64.b64encode(jpeg(COLOURS["Red"])).decode()
    body = json.dumps(
        {"instances": [{"image": good}, {"image": base64.b64encode(b"nope").decode()}]}
    )
    with pytest.raises(ImageError, match=r"^instances\[1\]: cannot decode image"):
        input_fn(body, "application/json")


def test_one_huge_image_names_its_size_before_any_decoding(model):
    buf = io.BytesIO()
    Image.new("L", (9000, 9000)).save(buf, "PNG")  # a tiny file, 81 M pixels
    with pytest.raises(ImageTooLargeError, match="9000x9000 pixels, over the limit"):
        input_fn(buf.getvalue(), "image/png")
