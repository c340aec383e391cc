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
    with pytest.raises(PayloadTooLargeError, match="2000 bytes"):  # as the worker gets it
        input_fn(bytearray(2000), "image/jpeg")
    with pytest.raises(PayloadTooLargeError, match="1200 bytes"):  # a str counts its bytes
        input_fn("\u00e9" * 600, "application/json")
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


# ---- JSON Lines: what a Batch Transform job with SplitType Line sends ----------------------


def jsonl(*images: bytes, **extra) -> bytes:
    return b"".join(
        json.dumps({"image": base64.b64encode(data).decode(), **extra}).encode() + b"\n"
        for data in images
    )


def lines_answer(model, body: bytes, accept: str | None = None) -> list[dict]:
    text, media = output_fn(predict_fn(input_fn(body, "application/jsonlines"), model), accept)
    assert media == "application/jsonlines"
    return [json.loads(line) for line in text.split("\n")]


def test_json_lines_are_answered_line_for_line_in_order(model):
    order = ["Green", "Red", "Blue", "Red", "Green"]
    got = lines_answer(model, jsonl(*(jpeg(COLOURS[c]) for c in order)))
    assert [a["label"] for a in got] == order
    assert all(len(a["top_k"]) == 3 for a in got)


def test_json_lines_records_are_run_in_bounded_chunks_in_order(model, monkeypatch):
    """A MultiRecord request holds as many records as the payload limit allows, not
    DOGBREED_MAX_INSTANCES: they are decoded and run a chunk at a time, order kept."""
    monkeypatch.setenv("DOGBREED_MAX_INSTANCES", "2")
    order = ["Blue", "Red", "Green"] * 3
    got = lines_answer(model, jsonl(*(jpeg(COLOURS[c]) for c in order)))
    assert [a["label"] for a in got] == order


def test_json_lines_take_per_line_top_k_blank_lines_and_crlf(model):
    red = base64.b64encode(jpeg(COLOURS["Red"])).decode()
    body = f'{{"image": "{red}", "top_k": 1}}\r\n\n   \n{{"image": "{red}"}}\n\n'.encode()
    got = lines_answer(model, body)
    assert [len(a["top_k"]) for a in got] == [1, 3]


def test_json_lines_answer_json_when_accept_asks_for_it(model):
    body = jsonl(jpeg(COLOURS["Red"]), jpeg(COLOURS["Blue"]))
    text, media = output_fn(
        predict_fn(input_fn(body, "application/jsonlines"), model), "application/json"
    )
    assert media == "application/json"
    assert [p["label"] for p in json.loads(text)["predictions"]] == ["Red", "Blue"]


def test_a_single_image_answers_one_json_line_when_accept_asks(model):
    text, media = output_fn(
        predict_fn(input_fn(jpeg(COLOURS["Green"]), "image/jpeg"), model), "application/jsonlines"
    )
    assert media == "application/jsonlines" and "\n" not in text
    assert json.loads(text)["label"] == "Green"


@pytest.mark.parametrize(
    "line3,error,status,reason",
    [
        (b"{not json", RequestError, 400, "malformed JSON"),
        (b'["a list"]', RequestError, 400, "must be an object"),
        (b'{"url": "http://example.invalid/x.jpg"}', RequestError, 400, "does not fetch URLs"),
        (b'{"image": "***"}', RequestError, 400, "not valid base64"),
        (b'{"image": "aGVsbG8="}', ImageError, 400, "cannot decode image"),
        (b'{"image": "aGVsbG8=", "top_k": 0}', RequestError, 400, "top_k"),
    ],
)
def test_one_bad_record_fails_the_request_naming_its_line(model, line3, error, status, reason):
    """Any failed invocation fails a transform job: the answer says which line and why."""
    good = jsonl(jpeg(COLOURS["Red"]))
    body = good + good + line3 + b"\n" + good
    with pytest.raises(error, match=rf"^line 3: .*{reason}") as info:
        predict_fn(input_fn(body, "application/jsonlines"), model)
    assert http_status(info.value) == status


def test_a_record_that_fails_to_decode_late_is_named_too(model):
    """A file whose header reads but whose data does not: found while decoding, still named."""
    data = jpeg(COLOURS["Red"], size=(640, 480))
    truncated = data[: len(data) // 3]
    body = jsonl(jpeg(COLOURS["Blue"]), truncated)
    try:
        predict_fn(input_fn(body, "application/jsonlines"), model)
    except ImageError as exc:
        assert str(exc).startswith("line 2: ")
    # (Pillow may also fill a truncated JPEG in: an answer for both lines is fine.)


def test_a_json_lines_record_over_the_pixel_limit_is_413_with_its_line(model, monkeypatch):
    monkeypatch.setenv("DOGBREED_MAX_PIXELS", "1000")
    body = jsonl(jpeg(COLOURS["Red"], size=(20, 20)), jpeg(COLOURS["Red"]))
    with pytest.raises(ImageTooLargeError, match=r"^line 2: ") as info:
        input_fn(body, "application/jsonlines")
    assert http_status(info.value) == 413


def test_an_empty_json_lines_body_is_a_client_error(model):
    for body in (b"", b"\n\n", b"  \r\n"):
        with pytest.raises(RequestError, match="no records"):
            input_fn(body, "application/jsonlines")


def test_the_payload_limit_holds_for_json_lines(monkeypatch):
    monkeypatch.setenv("DOGBREED_MAX_PAYLOAD_MB", "0.001")
    with pytest.raises(PayloadTooLargeError):
        input_fn(jsonl(jpeg(COLOURS["Red"])), "application/jsonlines")


def test_a_batch_transform_jobs_payload_limit_is_the_request_limit(monkeypatch):
    """SAGEMAKER_MAX_PAYLOAD_IN_MB (the job's MaxPayloadInMB) wins over our 6 MB default."""
    monkeypatch.delenv("DOGBREED_MAX_PAYLOAD_MB", raising=False)
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "20")
    big = jpeg(COLOURS["Red"]) + b"\0" * (7 * 1024 * 1024)  # 7 MB: over 6, under 20
    assert input_fn(big, "image/jpeg").batch.shape == (1, 3, 224, 224)
    monkeypatch.setenv("SAGEMAKER_MAX_PAYLOAD_IN_MB", "6")
    with pytest.raises(PayloadTooLargeError):
        input_fn(big, "image/jpeg")


@settings(max_examples=400, deadline=None)
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.lists(
            st.one_of(
                json_values.map(lambda v: json.dumps(v).encode()),
                st.dictionaries(
                    st.sampled_from(["image", "top_k", "url"]),
                    st.one_of(
                        json_values,
                        st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
                    ),
                    max_size=3,
                ).map(lambda d: json.dumps(d).encode()),
                st.binary(max_size=40),
            ),
            max_size=5,
        ).map(b"\n".join),
    )
)
def test_json_lines_parser_raises_only_our_errors_for_any_bytes(body):
    from dogbreed.serve.codec import parse_json_lines

    try:
        records = parse_json_lines(body, 5)
    except RequestError:
        return
    assert records and all(r.line >= 1 and r.top_k >= 1 for r in records)
    numbers = [r.line for r in records]
    assert numbers == sorted(set(numbers))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from(sorted(ENCODED)),
    cut=st.floats(0, 1),
    noise=st.binary(max_size=60),
    position=st.integers(0, 3),
)
def test_any_json_lines_body_is_an_answer_or_a_client_error(model, name, cut, noise, position):
    data = ENCODED[name][: max(1, int(len(ENCODED[name]) * cut))]
    lines = [jsonl(jpeg(COLOURS["Red"])).rstrip(b"\n")] * 3
    lines.insert(position, jsonl(data).rstrip(b"\n") if position % 2 else noise)
    try:
        got = predict_fn(input_fn(b"\n".join(lines), "application/jsonlines"), model)
    except DogbreedError as exc:
        assert 400 <= http_status(exc) < 500, exc
        assert str(exc).startswith(("line ", "no records")), exc
    else:
        assert len(got) >= 3
