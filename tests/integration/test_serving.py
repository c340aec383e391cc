"""The endpoint through HTTP: the real multi-model-server, started as SageMaker starts it.

Every content type, batches, top_k and every error case, then proof that the
worker still answers correctly. Parametrised over where the server runs.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from support.cli import run_cli
from support.containers import SERVE_IMAGE, image_present
from support.servers import free_port, start_container, start_native, stop, wait_for_ping


@pytest.fixture(scope="module", params=["native", "container"])
def server(request, trained, tmp_path_factory):
    """(base URL, model dir) of a running server on the end-to-end model."""
    if request.param == "container" and not image_present(SERVE_IMAGE):
        pytest.skip(f"{SERVE_IMAGE} not built (make build)")
    root, _ = trained
    tmp = tmp_path_factory.mktemp(f"serve-{request.param}")
    start = start_native if request.param == "native" else start_container
    url, proc, log = start(root / "model", tmp)
    try:
        cold = wait_for_ping(url, proc, log)
        print(f"{request.param} server: first /ping 200 after {cold:.1f} s")
        yield url, root / "model"
    finally:
        if request.param == "container":
            proc.run.stop([proc.container], timeout=20)  # docker stop -t 20, errors ignored
        stop(proc)


def invoke(
    url: str, body: bytes | str, content_type: str, timeout: float = 60, **headers
) -> requests.Response:
    return requests.post(
        f"{url}/invocations",
        data=body,
        timeout=timeout,
        headers={"Content-Type": content_type, **headers},
    )


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def test_images(e2e_data) -> list[Path]:
    return sorted((e2e_data / "test").glob("*/*.jpg"))[::4]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_ping(server):
    url, _ = server
    r = requests.get(f"{url}/ping", timeout=10)
    assert r.status_code == 200


@pytest.mark.parametrize(
    "content_type", ["image/jpeg", "application/x-image", "application/octet-stream"]
)
def test_raw_image_bytes(server, test_images, content_type):
    url, _ = server
    r = invoke(url, test_images[0].read_bytes(), content_type)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/json")
    answer = r.json()
    assert set(answer) == {"label", "index", "score", "top_k"}
    assert answer["label"] == answer["top_k"][0]["label"] and 0 <= answer["score"] <= 1
    assert len(answer["top_k"]) == 5  # default top_k, all five classes here
    assert abs(sum(t["score"] for t in answer["top_k"]) - 1) < 1e-3


def test_predictions_equal_cli_predict(server, test_images):
    url, model_dir = server
    cli = run_cli(
        "predict", "--model-dir", model_dir, "--json", "--top-k", "5", *test_images, check=True
    )
    expected = [json.loads(line) for line in cli.stdout.splitlines()]
    for path, want in zip(test_images, expected, strict=True):
        got = invoke(url, path.read_bytes(), "image/jpeg").json()
        assert (got["label"], got["index"]) == (want["label"], want["index"])
        np.testing.assert_allclose(
            [t["score"] for t in got["top_k"]], [t["score"] for t in want["top_k"]], atol=1e-5
        )


def test_json_single_and_batch(server, test_images):
    url, _ = server
    one = invoke(
        url,
        json.dumps({"image": b64(test_images[0].read_bytes()), "top_k": 2}),
        "application/json; charset=utf-8",
    )
    assert one.status_code == 200 and len(one.json()["top_k"]) == 2
    batch = invoke(
        url,
        json.dumps(
            {"instances": [{"image": b64(p.read_bytes())} for p in test_images[:3]], "top_k": 1}
        ),
        "application/json",
    )
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert len(predictions) == 3 and all(len(p["top_k"]) == 1 for p in predictions)
    singles = [invoke(url, p.read_bytes(), "image/jpeg").json() for p in test_images[:3]]
    assert [p["index"] for p in predictions] == [s["index"] for s in singles]
    assert predictions[0]["index"] == one.json()["index"]


def test_png_with_alpha_tiny_and_real_photos(server, photos):
    url, _ = server
    rgba = Image.new("RGBA", (300, 200), (200, 30, 30, 128))
    assert invoke(url, encode(rgba, "PNG"), "image/png").status_code == 200
    assert invoke(url, encode(Image.new("RGB", (1, 1)), "PNG"), "image/png").status_code == 200
    for name in ("bullmastiff", "dalmatian"):
        assert invoke(url, photos[name].read_bytes(), "image/jpeg").status_code == 200


def bad_requests(jpeg: bytes) -> list[tuple[str, bytes | str, str, int, str]]:
    huge = encode(Image.new("L", (9000, 9000)), "PNG")  # tiny file, 81 M pixels
    return [
        ("unsupported type", b"hello", "text/plain", 415, "unsupported content type"),
        ("zero bytes", b"", "image/jpeg", 400, "empty image"),
        ("truncated jpeg", jpeg[: len(jpeg) // 3], "image/jpeg", 400, "cannot decode"),
        ("not an image", b"GIF89a but not really" * 10, "image/jpeg", 400, "cannot decode"),
        ("malformed json", "{not json", "application/json", 400, "malformed JSON"),
        ("bad base64", json.dumps({"image": "@@@"}), "application/json", 400, "base64"),
        (
            "url",
            json.dumps({"url": "http://169.254.169.254/"}),
            "application/json",
            400,
            "does not fetch URLs",
        ),
        (
            "bad top_k",
            json.dumps({"image": b64(jpeg), "top_k": "3"}),
            "application/json",
            400,
            "top_k",
        ),
        ("empty batch", json.dumps({"instances": []}), "application/json", 400, "non-empty"),
        (
            "bad instance",
            json.dumps({"instances": [{"image": b64(jpeg)}, {"img": "x"}]}),
            "application/json",
            400,
            "instances[1]",
        ),
        ("over size", b"\xff" * (6 * 1024 * 1024 + 512 * 1024), "image/jpeg", 413, "over the"),
        # Up to twice the limit the answer is still JSON, not a reset connection.
        ("twice the size", b"\xff" * (12 * 1024 * 1024), "image/jpeg", 413, "over the"),
        ("huge dimensions", huge, "image/png", 413, "9000x9000"),
    ]


def test_every_error_then_still_serving(server, test_images):
    url, _ = server
    jpeg = test_images[0].read_bytes()
    before = invoke(url, jpeg, "image/jpeg").json()
    for name, body, content_type, status, message in bad_requests(jpeg):
        r = invoke(url, body, content_type)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        assert r.headers["Content-Type"].startswith("application/json"), name
        assert message in r.json()["error"], (name, r.text[:300])
        assert "Traceback" not in r.text
    not_acceptable = invoke(url, jpeg, "image/jpeg", Accept="text/csv")
    assert not_acceptable.status_code == 406
    for _ in range(4):  # both workers are alive and give the same answer as before
        assert invoke(url, jpeg, "image/jpeg").json() == before


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/models"),
        ("GET", "/models/model"),
        ("POST", "/models?url=http://127.0.0.1:9/evil.mar&initial_workers=1"),
        ("PUT", "/models/model?min_worker=0&max_worker=0"),
        ("DELETE", "/models/model"),
    ],
)
def test_the_management_api_is_not_on_the_inference_port(server, test_images, method, path):
    """Registering a model from a URL runs its handler: nobody reaching the port may do it."""
    url, _ = server
    jpeg = test_images[0].read_bytes()
    before = invoke(url, jpeg, "image/jpeg").json()
    r = requests.request(method, f"{url}{path}", timeout=30)
    assert r.status_code in (404, 405), (method, path, r.status_code, r.text[:300])
    assert requests.get(f"{url}/ping", timeout=10).status_code == 200
    assert invoke(url, jpeg, "image/jpeg").json() == before  # the model is still served


def noise_jpeg(side: int = 2110) -> bytes:
    """A JPEG of random pixels: just under the 6 MB limit at this size."""
    pixels = np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=97)
    return out.getvalue()


def test_a_burst_of_maximum_size_requests_is_answered(server, test_images):
    """50 clients at once, each with a 6 MB photo: the front end buffers every body."""
    from concurrent.futures import ThreadPoolExecutor

    url, _ = server
    body = noise_jpeg()
    assert 5.5 * 2**20 < len(body) <= 6 * 2**20
    with ThreadPoolExecutor(50) as pool:
        # The last one waits behind 49 decodes on two workers: allow for a busy machine.
        answers = list(pool.map(lambda _: invoke(url, body, "image/jpeg", timeout=180), range(50)))
    statuses = [a.status_code for a in answers]
    assert statuses == [200] * 50, [a.text[:200] for a in answers if a.status_code != 200]
    jpeg = test_images[0].read_bytes()
    assert invoke(url, jpeg, "image/jpeg").status_code == 200


def test_bad_model_dir_fails_the_start_in_one_line(tmp_path):
    (tmp_path / "model").mkdir()
    proc = run_cli(
        "serve", "--model-dir", tmp_path / "model", "--port", str(free_port()), timeout=60
    )
    assert proc.returncode == 4
    assert proc.stderr.strip().count("\n") == 0 and "metadata.json is missing" in proc.stderr
