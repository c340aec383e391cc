"""Batch Transform: the serve image as a transform job's container, and its local twin.

Natively (`dogbreed serve`, as the image runs it): the job's MaxPayloadInMB is the
request limit (a 6.4 MB phone photo under a 20 MB job), GET /execution-parameters
answers values that fit the server, and JSON Lines (SplitType Line, MultiRecord)
are answered line for line, a bad line naming itself. In the image:
`dogbreed local transform` over a folder with one corrupt file.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from support.cli import run_cli
from support.containers import SERVE_IMAGE, image_present
from support.servers import start_native, stop, wait_for_ping

JOB_ENV = {
    "SAGEMAKER_BATCH": "True",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
    "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD",
    "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
}


def phone_photo(min_mb: float = 6.2) -> bytes:
    """A 4032x3024 JPEG of at least min_mb MB (a phone camera's photo): over the
    endpoint's 6 MB limit, under a 20 MB transform job's."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 255, (378, 504, 3), dtype=np.uint8))
    pixels = np.asarray(base.resize((4032, 3024), Image.Resampling.BILINEAR), dtype=np.int16)
    pixels = pixels + rng.integers(-24, 24, pixels.shape, dtype=np.int16)
    img = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    for quality in range(90, 100):
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        if len(buf.getvalue()) >= min_mb * 1024 * 1024:
            return buf.getvalue()
    raise AssertionError("could not make a photo that large")


@pytest.fixture(scope="module")
def test_images(e2e_data) -> list[Path]:
    return sorted((e2e_data / "test").glob("*/*.jpg"))[::8][:6]


@pytest.fixture(scope="module")
def batch_server(trained, tmp_path_factory):
    """`dogbreed serve` with the variables a transform job (MaxPayloadInMB=20) sets."""
    root, _ = trained
    tmp = tmp_path_factory.mktemp("transform-native")
    url, proc, log = start_native(root / "model", tmp, env=JOB_ENV)
    try:
        wait_for_ping(url, proc, log)
        yield url, log
    finally:
        stop(proc)


def jsonl(images: list[bytes]) -> bytes:
    return b"".join(
        json.dumps({"image": base64.b64encode(data).decode()}).encode() + b"\n" for data in images
    )


def test_execution_parameters_fit_the_server(batch_server):
    url, log = batch_server
    r = requests.get(f"{url}/execution-parameters", timeout=10)
    assert r.status_code == 200, log.read_text()[-2000:]
    assert r.json() == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD",
                        "MaxPayloadInMB": 20}  # fmt: skip
    assert requests.post(f"{url}/execution-parameters", timeout=10).status_code == 405
    # The management API stays on its unix socket: nothing of it on this address.
    assert requests.get(f"{url}/models", timeout=10).status_code == 404


def test_the_jobs_payload_limit_is_the_request_limit(batch_server):
    """The issue's case: a 6.4 MB phone photo in a MaxPayloadInMB=20 job is answered."""
    url, _ = batch_server
    photo = phone_photo()
    r = requests.post(f"{url}/invocations", data=photo, timeout=120,
                      headers={"Content-Type": "application/x-image"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert "label" in r.json()
    over = photo + b"\0" * (21 * 1024 * 1024 - len(photo))
    r = requests.post(f"{url}/invocations", data=over, timeout=120,
                      headers={"Content-Type": "application/x-image"})  # fmt: skip
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_json_lines_multi_record_is_answered_line_for_line(batch_server, test_images):
    url, _ = batch_server
    images = [p.read_bytes() for p in test_images]
    body = jsonl(images)
    r = requests.post(f"{url}/invocations", data=body, timeout=120,
                      headers={"Content-Type": "application/jsonlines"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/jsonlines")
    answers = [json.loads(line) for line in r.text.splitlines()]
    headers = {"Content-Type": "image/jpeg"}
    one_by_one = [
        requests.post(f"{url}/invocations", data=data, timeout=60, headers=headers).json()
        for data in images
    ]
    assert [a["label"] for a in answers] == [a["label"] for a in one_by_one]
    # Most test images are classified as their folder's class.
    # A class folder is NNN.Name: its index is NNN - 1.
    right = sum(
        a["index"] == int(p.parent.name.split(".")[0]) - 1
        for a, p in zip(answers, test_images, strict=True)
    )
    assert right >= len(images) - 2


def test_one_bad_line_fails_the_request_naming_it(batch_server, test_images):
    url, _ = batch_server
    good = jsonl([test_images[0].read_bytes()])
    body = good + good + b'{"image": "bm90IGFuIGltYWdl"}\n' + good
    r = requests.post(f"{url}/invocations", data=body, timeout=60,
                      headers={"Content-Type": "application/jsonlines"})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"].startswith("line 3: ")
    # The worker goes on: the next request is answered.
    r = requests.post(f"{url}/invocations", data=good, timeout=60,
                      headers={"Content-Type": "application/jsonlines"})  # fmt: skip
    assert r.status_code == 200


# ---- `dogbreed local transform` on the serve image ----------------------------------------


def leftovers(run_id: str) -> list[str]:
    import docker

    client = docker.from_env(timeout=60)
    try:
        label = {"label": f"dogbreed.local={run_id}"}
        return [c.name for c in client.containers.list(all=True, filters=label)]
    finally:
        client.close()


@pytest.mark.skipif(not image_present(SERVE_IMAGE), reason=f"{SERVE_IMAGE} not built (make build)")
@pytest.mark.parametrize("split_type", ["None", "Line"])
def test_local_transform_over_a_folder_with_one_corrupt_file(
    trained, test_images, tmp_path, split_type
):
    root, _ = trained
    inputs, out = tmp_path / "in", tmp_path / "out"
    (inputs / "more").mkdir(parents=True)
    photos = test_images[:4]
    if split_type == "None":
        for i, photo in enumerate(photos):
            (inputs / ("more" if i % 2 else "") / f"{i}-{photo.name}").write_bytes(
                photo.read_bytes()
            )
        (inputs / "corrupt.jpg").write_bytes(photos[0].read_bytes()[:300] + b"\0" * 50)
        expected = {f"{i}-{p.name}" if i % 2 == 0 else f"more/{i}-{p.name}" for i, p in
                    enumerate(photos)}  # fmt: skip
        flags = []
    else:
        (inputs / "photos.jsonl").write_bytes(jsonl([p.read_bytes() for p in photos]))
        (inputs / "corrupt.jsonl").write_bytes(jsonl([photos[0].read_bytes(), b"not an image"]))
        expected = {"photos.jsonl"}
        flags = ["--split-type", "Line", "--batch-strategy", "MultiRecord"]
    run_id = f"dogbreed-test-transform-{uuid.uuid4().hex[:8]}"
    proc = run_cli(
        *("local", "transform", "--image", SERVE_IMAGE, "--model", root / "model"),
        *("--input", inputs, "--output", out, "--run-id", run_id, "--max-payload", "20"),
        *flags,
        timeout=600,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-3000:]  # one file failed: so does the job
    assert leftovers(run_id) == []
    outs = {str(p.relative_to(out))[: -len(".out")] for p in out.rglob("*.out")}
    assert outs == expected, text[-3000:]
    if split_type == "None":
        assert "FAILED corrupt.jpg: HTTP 400: " in text
        for name in expected:
            assert "label" in json.loads((out / f"{name}.out").read_text())
    else:
        assert "FAILED corrupt.jsonl: HTTP 400: line 2: " in text
        lines = (out / "photos.jsonl.out").read_text().splitlines()
        assert len(lines) == len(photos) and all("label" in json.loads(x) for x in lines)
    with (out / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(photos) and all(r["breed"] and float(r["score"]) > 0 for r in rows)
    assert "images/s" in text and f"SplitType {split_type}" in text
    assert (out / "container.log").stat().st_size > 0
