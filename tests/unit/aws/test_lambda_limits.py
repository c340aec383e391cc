"""The Lambda's limits as AWS counts them: an InvokeEndpoint body over the endpoint's limit
after encoding is a 413 (never sent), a slow endpoint is called once and a 504 within the
invocation's time, the function URL twin refuses what a function URL refuses, and `aws
invoke` refuses what AWS would. Loopback servers only."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import threading
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import lambda_function as lf
from dogbreed.aws.url_twin import MAX_EVENT_BYTES, FunctionUrlTwin
from dogbreed.core.errors import ConfigError
from support.iam_check import run_verb, without_credentials

MB = 1024 * 1024
SERVERLESS_MAX = str(4 * 1024 * 1024)
SLOW_S = 4.0  # the endpoint's answer time, past what the invocation has left


@pytest.fixture
def env(monkeypatch):
    for key in ("ALLOW_URL_FETCH", "URL_TIMEOUT_S", "MAX_IMAGE_BYTES", "ENDPOINT_TIMEOUT_S"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_NAME", "dogs")
    monkeypatch.setenv("S3_PREFIX", "s3://in-bucket/uploads/")
    monkeypatch.setattr(lf, "_clients", {})
    return monkeypatch


def silent_endpoint(timeout_s: int = 20) -> Stubber:
    """A sagemaker-runtime client that answers nothing: a call would be a 502."""
    client = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    lf._clients[("sagemaker-runtime", timeout_s)] = client
    return Stubber(client)


def b64(size: int) -> str:
    return base64.b64encode(b"\xff" * size).decode()


# ---- the InvokeEndpoint body, counted after encoding ----------------------------------------


@pytest.mark.parametrize(
    ("size", "limit"),
    [(5 * MB, None), (int(3.1 * MB), SERVERLESS_MAX)],  # instance endpoint 6 MiB; serverless 4
)
def test_top_k_over_the_limit_once_base64_encoded_is_413_and_never_sent(env, size, limit):
    if limit:
        env.setenv("MAX_IMAGE_BYTES", limit)
    with silent_endpoint():
        out = lf.lambda_handler({"image_base64": b64(size), "top_k": 3}, None)
    assert out["statusCode"] == 413, out
    assert "base64 in JSON, for top_k" in out["error"]


def test_an_s3_image_with_top_k_is_counted_after_encoding(env):
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    lf._clients[("s3", lf.S3_READ_TIMEOUT_S)] = s3
    body = b"\xff" * (5 * MB)
    with Stubber(s3) as stub, silent_endpoint():
        stub.add_response("get_object", {"Body": io.BytesIO(body), "ContentLength": len(body)})
        out = lf.lambda_handler({"s3_uri": "s3://in-bucket/uploads/dog.jpg", "top_k": 3}, None)
    assert out["statusCode"] == 413, out


def test_the_same_image_without_top_k_is_sent_raw(env):
    with silent_endpoint() as stub:
        stub.add_response(
            "invoke_endpoint",
            {"Body": io.BytesIO(b'{"label": "akita", "index": 0, "score": 0.9, "top_k": []}')},
        )
        out = lf.lambda_handler({"image_base64": b64(5 * MB)}, None)
    assert out["breed"] == "akita"


# ---- a slow endpoint: one request, a 504 inside the invocation's time -----------------------


class Context:
    """What Lambda hands the handler: the time left of this invocation."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self.deadline - time.monotonic()) * 1000)


class SlowRuntime(http.server.BaseHTTPRequestHandler):
    """InvokeEndpoint that answers after SLOW_S; counts the requests it got."""

    hits = 0

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        type(self).hits += 1
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(SLOW_S)
        with contextlib.suppress(OSError):
            self.send_response(200)
            self.end_headers()


@pytest.fixture
def slow_endpoint(env):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowRuntime)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    SlowRuntime.hits = 0
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": f"http://127.0.0.1:{server.server_address[1]}",
    }.items():
        env.setenv(key, value)
    yield
    server.shutdown()


def test_a_read_timeout_is_not_retried_and_ends_inside_the_invocation(slow_endpoint):
    left_s = 6.0  # connect allowance 3 s + 1 s to answer: 2 s for the endpoint
    start = time.monotonic()
    out = lf.lambda_handler({"image_base64": b64(1000)}, Context(left_s))
    took = time.monotonic() - start
    assert out == {"statusCode": 504, "error": "the endpoint did not answer in time"}
    assert took < left_s - 1 and SlowRuntime.hits == 1


def test_with_no_time_left_the_endpoint_is_not_called(slow_endpoint):
    out = lf.lambda_handler({"image_base64": b64(1000)}, Context(3.5))
    assert out == {"statusCode": 504, "error": "no time left to call the endpoint"}
    assert SlowRuntime.hits == 0


def test_the_endpoint_timeout_is_the_setting_when_time_is_plenty(env):
    env.setenv("ENDPOINT_TIMEOUT_S", "20")
    assert lf.endpoint_timeout_s(Context(900)) == 20
    assert lf.endpoint_timeout_s(Context(10.5)) == 6
    assert lf.endpoint_timeout_s(None) == 20  # outside Lambda: the setting alone


# ---- the function URL twin counts the event, body base64-encoded ----------------------------


def post(url: str, size: int) -> int:
    request = urllib.request.Request(
        url, data=b"\xff" * size, method="POST", headers={"Content-Type": "image/jpeg"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_url_twin_refuses_what_a_function_url_refuses():
    seen = []

    def handler(event, context):
        seen.append(len(event["body"]))
        return {"statusCode": 200, "body": "{}"}

    twin = FunctionUrlTwin(handler).start()
    try:
        assert post(twin.url, int(4.4 * MB)) == 200  # a large photo: fits once encoded
        assert post(twin.url, int(4.6 * MB)) == 413  # under 6 MiB raw, over it as base64
        assert post(twin.url, MAX_EVENT_BYTES + 1) == 413
    finally:
        twin.shutdown()
        twin.server_close()
    assert len(seen) == 1


# ---- `aws invoke`: what AWS would refuse is refused before it is sent ----------------------


@pytest.mark.parametrize(
    ("size", "through", "says"),
    [
        (6 * MB + 1, ["--endpoint"], "over InvokeEndpoint's payload limit"),
        (int(4.6 * MB), [], "over Lambda's Invoke payload (base64) limit"),
    ],
)
def test_aws_invoke_counts_the_request_as_sent(tmp_path, monkeypatch, size, through, says):
    without_credentials(monkeypatch, tmp_path)
    photo = tmp_path / "big.jpg"
    photo.write_bytes(b"\xff" * size)
    ctx, error = run_verb("invoke", "--name", "dogs", "--region", "us-east-1", str(photo), *through)
    assert isinstance(error, ConfigError) and says in str(error), error
    assert ctx.requests == []  # nothing sent


def test_a_short_setting_is_kept_as_is(env):
    env.setenv("ENDPOINT_TIMEOUT_S", "0.5")
    assert lf.endpoint_timeout_s(Context(900)) == 0.5
