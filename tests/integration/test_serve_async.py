"""The serve image as `aws deploy --async` sets it up: the model server started with the
variables the async model carries (aws/asynchronous.py) takes what an asynchronous
endpoint hands it: photos far over the real-time 6 MB, as many at once as SageMaker's
MaxConcurrentInvocationsPerInstance, and refuses what is over its own limit."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from PIL import Image

from dogbreed.aws.asynchronous import ASYNC_WORKERS, PAYLOAD_MB, async_environment
from support.servers import start_native, stop, wait_for_ping

MB = 1024 * 1024


@pytest.fixture(scope="module")
def async_server(trained, tmp_path_factory):
    root, _ = trained
    tmp = tmp_path_factory.mktemp("serve-async")
    url, proc, log = start_native(root / "model", tmp, env=async_environment(900))
    try:
        wait_for_ping(url, proc, log)
        yield url, log
    finally:
        stop(proc)


def noise_jpeg(side: int) -> bytes:
    """Random pixels: about 1.3 bytes a pixel at quality 97, the worst case for a JPEG."""
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=97)
    return out.getvalue()


def invoke(url: str, body: bytes) -> requests.Response:
    return requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": "image/jpeg"}, timeout=300
    )


def test_a_12_mb_photo_is_answered(async_server):
    url, _ = async_server
    body = noise_jpeg(3100)
    assert 12 * MB < len(body) < 16 * MB  # twice the real-time limit and more
    answer = invoke(url, body)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["label"]


def test_the_largest_photos_at_the_endpoints_concurrency(async_server):
    """ASYNC_WORKERS photos of about 53 MB at once (just under the 40 MP limit): the front
    end holds every body while the workers decode, then still answers."""
    url, log = async_server
    body = noise_jpeg(6300)
    assert 50 * MB < len(body) < PAYLOAD_MB * MB
    with ThreadPoolExecutor(ASYNC_WORKERS) as pool:
        answers = list(pool.map(lambda _: invoke(url, body), range(ASYNC_WORKERS)))
    assert [a.status_code for a in answers] == [200] * ASYNC_WORKERS, [
        a.text[:300] for a in answers
    ]
    assert "OutOfMemoryError" not in log.read_text()
    assert invoke(url, noise_jpeg(3100)).status_code == 200


def test_over_the_async_limit_is_a_413(async_server):
    url, _ = async_server
    answer = invoke(url, b"\xff" * (PAYLOAD_MB * MB + 1))
    assert answer.status_code == 413
    assert "over the" in answer.json()["error"]


def test_the_largest_bodies_the_front_end_takes_at_once_leave_it_serving(async_server):
    """The worst case for the Java front end's memory: ASYNC_WORKERS bodies just under its
    own limit (twice the payload limit, which still reach a worker for a readable 413)
    at once. Each is held in several buffers on their way to a worker."""
    url, log = async_server
    body = b"\xff" * (2 * PAYLOAD_MB * MB)
    for _ in range(3):  # the heap ran out in one round of several when sized for one copy
        with ThreadPoolExecutor(ASYNC_WORKERS) as pool:
            answers = list(pool.map(lambda _: invoke(url, body), range(ASYNC_WORKERS)))
        assert [a.status_code for a in answers] == [413] * ASYNC_WORKERS, [
            a.text[:300] for a in answers
        ]
    assert "OutOfMemoryError" not in log.read_text()
    assert invoke(url, noise_jpeg(3100)).status_code == 200
