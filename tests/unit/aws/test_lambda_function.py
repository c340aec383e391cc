"""The Lambda handler end to end: boto3 -> InvokeEndpoint gateway -> the real model server.

S3 reads go to moto's server on loopback. URL fetching is tested for what it
must refuse (no test traffic leaves loopback).
"""

from __future__ import annotations

import http.server
import subprocess
import time
import zipfile

import pytest

from dogbreed.aws import lambda_function
from dogbreed.aws.invoke_twin import InvokeEndpointGateway
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


def jpeg(test_jpegs, i: int = 0) -> tuple[bytes, str]:
    path, breed = test_jpegs[i]
    return path.read_bytes(), breed


class SlowModel(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()


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
