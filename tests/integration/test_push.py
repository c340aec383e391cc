"""`make push REGISTRY=...` to a local registry on loopback, then a pull by digest."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from support.containers import SERVE_IMAGE, engine, image_present, remove_image
from support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    shutil.which("docker-registry") is None or not image_present(SERVE_IMAGE),
    reason="needs Debian's docker-registry and the serve image (make test installs both)",
)


@pytest.fixture
def registry(tmp_path):
    port = free_port()
    config = tmp_path / "config.yml"
    config.write_text(f"""version: 0.1
storage:
  filesystem:
    rootdirectory: {tmp_path / "storage"}
http:
  addr: 127.0.0.1:{port}
""")
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://{url}/v2/", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("local registry did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_push_then_pull_by_digest(registry):
    image = SERVE_IMAGE.split(":")[0]
    # The push itself is `make push` (containers/push.sh, the docker CLI): the target a user
    # runs is what is tested here; the checks around it use the Docker SDK.
    proc = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "-C",
            str(REPO),
            "push",
            f"REGISTRY={registry}",
            f"IMAGES={image}",
            "TAG=citest",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"pushed {registry}/{image}:citest" in proc.stdout
    digest = re.findall(r"citest: digest: (sha256:[0-9a-f]{64})", proc.stdout)[0]
    tags = requests.get(f"http://{registry}/v2/{image}/tags/list", timeout=10).json()["tags"]
    assert sorted(tags) == ["citest", "latest"]
    ref = f"{registry}/{image}@{digest}"
    images = engine().images
    try:
        remove_image(f"{registry}/{image}:citest", f"{registry}/{image}:latest")
        images.pull(ref)
        assert images.get(ref).id == images.get(SERVE_IMAGE).id
    finally:
        remove_image(ref, check=False)
        for local in ("dogbreed-train", "dogbreed-serve"):  # the tags `make push` added
            remove_image(f"{local}:citest", check=False)
