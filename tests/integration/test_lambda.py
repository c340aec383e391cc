"""The Lambda handler end to end: boto3 -> InvokeEndpoint gateway -> the real model server.

S3 reads go to moto's server on loopback. URL fetching is tested for what it
must refuse (no test traffic leaves loopback; tests/unit/aws/test_lambda_fetch.py
fetches from a loopback TLS server). `dogbreed lambda-local` serves the page and
the handler on loopback as a function URL would.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from dogbreed.aws import lambda_function
from dogbreed.aws.invoke_twin import InvokeEndpointGateway
from dogbreed.serve.predictor import Predictor
from support.lambda_local import start_lambda_local, stop_lambda_local
from support.servers import start_native, stop, wait_for_ping

ENDPOINT = "dogbreed-test"


@pytest.fixture(scope="module")
def model_server(trained, tmp_path_factory):
    root, _ = trained
    url, proc, log = start_native(root / "model", tmp_path_factory.mktemp("lambda-serve"))
    try:
        wait_for_ping(url, proc, log)
        yield url
    finally:
        stop(proc)


@pytest.fixture
def aws(monkeypatch, model_server, moto_url):
    """AWS settings of the function: endpoint name, SDK aimed at the loopback twins."""
    gateway = InvokeEndpointGateway({ENDPOINT: model_server}).start()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "ENDPOINT_NAME": ENDPOINT,
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": gateway.url,
        "AWS_ENDPOINT_URL_S3": moto_url,
    }.items():
        monkeypatch.setenv(key, value)
    lambda_function._clients.clear()  # a fresh Lambda container reads the settings anew
    yield gateway
    gateway.shutdown()
    gateway.server_close()
    lambda_function._clients.clear()


def handle(event: dict) -> dict:
    return lambda_function.lambda_handler(event, None)


@pytest.fixture(scope="module")
def test_jpegs(trained, e2e_data) -> list[tuple[Path, str]]:
    """Held-out JPEGs with the breed the model itself gives each: what every path
    through the Lambda must hand back (the model's accuracy is tested elsewhere)."""
    paths = sorted((e2e_data / "test").glob("*/*.jpg"))[:6]
    answers = Predictor(trained[0] / "model").predict_images(paths)
    return [(p, a["label"]) for p, a in zip(paths, answers, strict=True)]


def jpeg(test_jpegs, i: int = 0) -> tuple[bytes, str]:
    path, breed = test_jpegs[i]
    return path.read_bytes(), breed


def test_image_base64(aws, test_jpegs, capsys):
    data, breed = jpeg(test_jpegs)
    out = handle({"image_base64": base64.b64encode(data).decode()})
    assert set(out) == {"breed", "index", "score", "top_k"}
    assert out["breed"] == breed and out["top_k"][0]["label"] == breed
    log = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert log["status"] == 200 and log["source"] == "base64" and log["bytes"] == len(data)


def test_top_k_is_passed_on(aws, test_jpegs):
    data, _ = jpeg(test_jpegs)
    assert len(handle({"image_base64": base64.b64encode(data).decode(), "top_k": 2})["top_k"]) == 2


def test_s3_uri(aws, test_jpegs, moto_url, monkeypatch):
    data, breed = jpeg(test_jpegs, 3)
    s3 = boto3.client("s3", endpoint_url=moto_url)
    s3.create_bucket(Bucket="dogs")
    s3.put_object(Bucket="dogs", Key="in/dog.jpg", Body=data)
    s3.put_object(Bucket="dogs", Key="private/dog.jpg", Body=data)
    off = handle({"s3_uri": "s3://dogs/in/dog.jpg"})
    assert off["statusCode"] == 400 and "no S3 input prefix" in off["error"]
    monkeypatch.setenv("S3_PREFIX", "s3://dogs/in/")  # what `aws lambda` sets from s3_input
    assert handle({"s3_uri": "s3://dogs/in/dog.jpg"})["breed"] == breed
    missing = handle({"s3_uri": "s3://dogs/in/none.jpg"})
    assert missing["statusCode"] == 400 and "cannot read" in missing["error"]
    outside = handle({"s3_uri": "s3://dogs/private/dog.jpg"})
    assert outside == {"statusCode": 403, "error": "s3_uri must be under s3://dogs/in/"}


@pytest.mark.parametrize("event_kind", ["rest", "http"])
def test_api_gateway_proxy_events(aws, test_jpegs, event_kind):
    data, breed = jpeg(test_jpegs, 5)
    context = (
        {"httpMethod": "POST"}
        if event_kind == "rest"
        else {"requestContext": {"http": {"method": "POST"}}}
    )
    image_event = {
        **context,
        "headers": {"Content-Type": "image/jpeg"},
        "body": base64.b64encode(data).decode(),
        "isBase64Encoded": True,
    }
    out = handle(image_event)
    assert out["statusCode"] == 200 and out["headers"]["Content-Type"] == "application/json"
    assert json.loads(out["body"])["breed"] == breed
    json_event = {
        **context,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"image_base64": base64.b64encode(data).decode()}),
        "isBase64Encoded": False,
    }
    assert json.loads(handle(json_event)["body"])["breed"] == breed
    bad = handle({**context, "body": "not json", "isBase64Encoded": False})
    assert bad["statusCode"] == 400 and "error" in json.loads(bad["body"])


@pytest.mark.parametrize(
    "event,status,message",
    [
        ({}, 400, "give one of"),
        ({"image_base64": "!!!"}, 400, "not valid base64"),
        ({"image_base64": base64.b64encode(b"not an image").decode()}, 400, "cannot decode"),
        ({"image_base64": ""}, 400, "non-empty"),
        ({"s3_uri": "dogs/key"}, 400, "s3://bucket/key"),
        ({"url": "http://example.com/dog.jpg"}, 400, "only https"),
        ({"url": "https://127.0.0.1/dog.jpg"}, 400, "refusing"),
        ({"url": "https://localhost/dog.jpg"}, 400, "refusing"),
        ({"url": "https://10.0.0.8/dog.jpg"}, 400, "refusing"),
        ({"url": "https://169.254.169.254/latest/meta-data/"}, 400, "refusing"),
        ({"url": "https://[::1]/dog.jpg"}, 400, "refusing"),
        ({"url": "https://example.com:8443/dog.jpg"}, 400, "standard https port"),
        ({"image_base64": "aGk=", "top_k": 0}, 400, "top_k"),
    ],
)
def test_bad_input(aws, monkeypatch, event, status, message):
    monkeypatch.setenv("ALLOW_URL_FETCH", "true")  # to reach the URL checks
    out = handle(event)
    assert out["statusCode"] == status and message in out["error"], out
    assert set(out) == {"statusCode", "error"}


def test_url_fetching_is_off_unless_switched_on(aws, monkeypatch):
    monkeypatch.delenv("ALLOW_URL_FETCH", raising=False)
    out = handle({"url": "https://example.com/dog.jpg"})
    assert out["statusCode"] == 400 and "switched off" in out["error"]
    monkeypatch.setenv("ALLOW_URL_FETCH", "false")
    assert "switched off" in handle({"url": "https://example.com/dog.jpg"})["error"]


def test_too_large(aws, test_jpegs, monkeypatch):
    data, _ = jpeg(test_jpegs)
    monkeypatch.setenv("MAX_IMAGE_BYTES", str(len(data) - 1))
    out = handle({"image_base64": base64.b64encode(data).decode()})
    assert out["statusCode"] == 413


def test_unknown_endpoint_is_502(aws, test_jpegs, monkeypatch):
    monkeypatch.setenv("ENDPOINT_NAME", "no-such-endpoint")
    data, _ = jpeg(test_jpegs)
    out = handle({"image_base64": base64.b64encode(data).decode()})
    assert out == {"statusCode": 502, "error": "the endpoint failed to classify the image"}


class SlowModel(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()


def test_endpoint_timeout_is_504(aws, test_jpegs, monkeypatch):
    slow = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowModel)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    gateway = InvokeEndpointGateway({"slow": f"http://127.0.0.1:{slow.server_address[1]}"})
    gateway.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", gateway.url)
    monkeypatch.setenv("ENDPOINT_NAME", "slow")
    monkeypatch.setenv("ENDPOINT_TIMEOUT_S", "0.5")
    lambda_function._clients.clear()
    try:
        data, _ = jpeg(test_jpegs)
        out = handle({"image_base64": base64.b64encode(data).decode()})
        assert out == {"statusCode": 504, "error": "the endpoint did not answer in time"}
    finally:
        gateway.shutdown()
        slow.shutdown()


def test_lambda_local_cli(model_server, test_jpegs):
    from support.cli import run_cli

    data_path, breed = test_jpegs[0]
    proc = run_cli("lambda-local", "--server", model_server, data_path, check=True)
    assert f"{data_path}: {breed} (index" in proc.stdout


def test_aws_invoke_endpoint(aws, test_jpegs):
    from support.cli import run_cli

    path, breed = test_jpegs[2]
    env = {"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": aws.url}
    proc = run_cli(
        "aws",
        "invoke",
        "--name",
        ENDPOINT,
        "--endpoint",
        "--region",
        "us-east-1",
        path,
        env=env,
        check=True,
    )
    assert proc.stdout.startswith(f"{path}: {breed} (index")


# ---- `dogbreed lambda-local` as a function URL: the page and POSTs on loopback ---------------


def http_call(url: str, body: bytes | None = None, content_type: str = "image/jpeg"):
    """(status, headers, body) of a GET (no body) or POST to url."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def test_lambda_local_serves_the_page_and_classifies_posts(model_server, test_jpegs, tmp_path):
    page_url, proc = start_lambda_local(model_server, tmp_path)
    try:
        status, headers, page = http_call(page_url)
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert page.decode() == lambda_function.PAGE
        data, breed = jpeg(test_jpegs, 1)
        status, headers, body = http_call(page_url, data)  # what the page's script sends
        assert status == 200 and headers["Content-Type"] == "application/json"
        assert json.loads(body)["breed"] == breed and len(json.loads(body)["top_k"]) == 5
        doc = json.dumps({"image_base64": base64.b64encode(data).decode(), "top_k": 2}).encode()
        answer = json.loads(http_call(page_url, doc, "application/json")[2])
        assert answer["breed"] == breed and len(answer["top_k"]) == 2
        status, _, body = http_call(page_url, b"not an image", "application/octet-stream")
        assert status == 400 and "error" in json.loads(body)
    finally:
        stop_lambda_local(proc)
