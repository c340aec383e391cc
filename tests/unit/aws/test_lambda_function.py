"""The Lambda function ships as one small file (standard library and boto3 only), and
answers a client's mistake with a 4xx, never with a 502 (in process, no network)."""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import logging
import re
import subprocess
import zipfile

import boto3
import pytest
from botocore.stub import Stubber

from dogbreed.aws import lambda_function as lf


def test_lambda_zip_is_small_and_standalone(tmp_path):
    proc = subprocess.run(
        ["make", "--no-print-directory", "lambda-zip", f"LAMBDA_ZIP={tmp_path / 'f.zip'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "f.zip") as zf:
        assert zf.namelist() == ["lambda_function.py"]
        source = zf.read("lambda_function.py").decode()
    assert (tmp_path / "f.zip").stat().st_size < 10_000
    assert "import numpy" not in source and "from dogbreed" not in source


@pytest.fixture
def env(monkeypatch):
    """A function with no deployment settings but its endpoint name (nothing is called)."""
    for key in ("ALLOW_URL_FETCH", "S3_PREFIX", "URL_TIMEOUT_S", "MAX_IMAGE_BYTES"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_NAME", "dogs")
    return monkeypatch


def handle(event: object) -> dict:
    return lf.lambda_handler(event, None)


def proxy(body: str, method: str = "POST", **extra) -> dict:
    return {"requestContext": {"http": {"method": method}}, "body": body, **extra}


# ---- client mistakes are 4xx -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"url": "https://example.com:99999/dog.jpg"}, "url is malformed"),
        ({"url": "https://example.com:abc/dog.jpg"}, "url is malformed"),
        ({"url": "https://[::1/dog.jpg"}, "url is malformed"),
        ({"url": f"https://{'a' * 64}.example.com/dog.jpg"}, "invalid host name"),
        ({"url": "https://a..example.com/dog.jpg"}, "invalid host name"),
        ({"url": "https://example.com:8443/dog.jpg"}, "standard https port"),
        ({"url": "http://example.com/dog.jpg"}, "only https"),
        ({"url": 42}, "url must be a string"),
        ({"s3_uri": "s3:///key.jpg"}, "s3://bucket/key"),
        ({"s3_uri": "s3://bucket"}, "s3://bucket/key"),
        ({"s3_uri": "s3://bucket/"}, "s3://bucket/key"),
        ({"s3_uri": ["s3://bucket/key"]}, "s3://bucket/key"),
        ({"image_base64": "aGk=", "top_k": True}, "top_k"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_client_mistakes_are_400(env, event, message):
    env.setenv("ALLOW_URL_FETCH", "true")
    out = handle(event)
    assert out["statusCode"] == 400 and message in out["error"], out


def test_a_deeply_nested_json_body_is_400(env):
    out = handle(proxy("[" * 100_000 + "]" * 100_000))
    assert out["statusCode"] == 400 and "JSON object" in json.loads(out["body"])["error"]


def test_url_fetching_is_off_unless_the_deployment_turns_it_on(env):
    out = handle({"url": "https://example.com/dog.jpg"})
    assert out["statusCode"] == 400 and "switched off" in out["error"]
    env.setenv("ALLOW_URL_FETCH", "false")
    assert "switched off" in handle({"url": "https://example.com/dog.jpg"})["error"]


# ---- s3_uri: only under the deployment's prefix ------------------------------------------


def test_s3_uri_is_off_without_a_prefix(env):
    out = handle({"s3_uri": "s3://dogs/in/dog.jpg"})
    assert out["statusCode"] == 400 and "no S3 input prefix" in out["error"]


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other-bucket/uploads/dog.jpg",
        "s3://in-bucket/elsewhere/dog.jpg",
        "s3://in-bucket/uploads-old/dog.jpg",  # a prefix of the name is not the folder
        "s3://in-bucket/uploads/../secret.jpg",
        "s3://in-bucket/uploads/./dog.jpg",
    ],
)
def test_s3_uri_outside_the_prefix_is_403(env, uri):
    env.setenv("S3_PREFIX", "s3://in-bucket/uploads")
    out = handle({"s3_uri": uri})
    assert out == {"statusCode": 403, "error": "s3_uri must be under s3://in-bucket/uploads/"}


def test_s3_uri_inside_the_prefix_is_read(env, monkeypatch):
    env.setenv("S3_PREFIX", "s3://in-bucket/uploads/")
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    monkeypatch.setitem(lf._clients, ("s3", lf.S3_READ_TIMEOUT_S), s3)
    monkeypatch.setattr(lf, "_invoke", lambda image, top_k, timeout_s: {"breed": image.decode()})
    with Stubber(s3) as stub:
        stub.add_response(
            "get_object",
            {"Body": io.BytesIO(b"a dog"), "ContentLength": 5},
            {"Bucket": "in-bucket", "Key": "uploads/a/dog.jpg"},
        )
        assert handle({"s3_uri": "s3://in-bucket/uploads/a/dog.jpg"}) == {"breed": "a dog"}


@pytest.mark.parametrize("setting", ["s3://in-bucket", "s3://in-bucket/", "s3://in-bucket//", "in"])
def test_a_whole_bucket_prefix_fails_the_cold_start(env, setting):
    env.setenv("S3_PREFIX", setting)
    with pytest.raises(ValueError, match="not a whole bucket"):
        importlib.reload(lf)
    env.delenv("S3_PREFIX")
    importlib.reload(lf)


# ---- unexpected exceptions: the type goes to the log, not to the caller ---------------------


def test_an_unexpected_exception_logs_its_type(env, monkeypatch, caplog, capsys):
    def broken(image, top_k, timeout_s):
        raise KeyError("label")

    monkeypatch.setattr(lf, "_invoke", broken)
    with caplog.at_level(logging.WARNING, logger="dogbreed.lambda"):
        out = handle({"image_base64": base64.b64encode(b"x").decode()})
    assert out == {"statusCode": 502, "error": "internal error"}
    assert [r.getMessage() for r in caplog.records] == ["unexpected KeyError"]
    assert caplog.records[0].exc_info[0] is KeyError  # the traceback goes to the log too
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["status"] == 502 and line["error_type"] == "KeyError"


# ---- the page a GET gets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [
        {"requestContext": {"http": {"method": "GET"}}, "rawPath": "/"},  # function URL
        {"httpMethod": "GET", "requestContext": {}, "path": "/"},  # REST API proxy
    ],
)
def test_a_get_answers_the_page(env, event):
    out = handle(event)
    assert out["statusCode"] == 200 and out["isBase64Encoded"] is False
    headers = out["headers"]
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"
    page = out["body"]
    assert '<input id="file" type="file" accept="image/*">' in page
    assert "http://" not in page and "https://" not in page  # no external assets
    assert 'method: "POST"' in page and "textContent" in page and "innerHTML" not in page


def test_the_page_runs_only_its_own_script_and_style(env):
    headers = handle(proxy("", method="GET"))["headers"]
    policy = dict(p.strip().split(" ", 1) for p in headers["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    page = lf.PAGE
    for tag, directive in (("script", "script-src"), ("style", "style-src")):
        inline = re.search(f"<{tag}>(.*?)</{tag}>", page, re.S).group(1)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert policy[directive] == f"'sha256-{digest}'"


def test_a_post_still_classifies(env, monkeypatch):
    monkeypatch.setattr(lf, "_invoke", lambda image, top_k, timeout_s: {"breed": image.decode()})
    event = proxy(base64.b64encode(b"jpeg").decode(), isBase64Encoded=True)
    out = handle({**event, "headers": {"Content-Type": "image/jpeg"}})
    assert out["statusCode"] == 200 and json.loads(out["body"]) == {"breed": "jpeg"}
    assert out["headers"] == {
        "Content-Type": "application/json",
        "X-Content-Type-Options": "nosniff",
    }
