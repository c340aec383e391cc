"""Fixtures both tiers share: real photos, synthetic datasets, a model trained once, moto."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dogbreed.train.synth import synthesize
from support.cli import E2E_CLASSES, E2E_PER_CLASS, E2E_TRAIN_FLAGS, run_cli, train_dirs
from support.servers import free_port


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real ImageNet JPEGs from foolbox's wheel (installed without its dependencies)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("foolbox (test photos) is not installed; run 'make install'")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return {
        "bullmastiff": data / "imagenet_00_243.jpg",
        "dalmatian": data / "imagenet_16_251.jpg",
        **{p.stem: p for p in sorted(data.glob("imagenet_*.jpg"))},
    }


@pytest.fixture(scope="session")
def e2e_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e-data")
    synthesize(out, E2E_CLASSES, E2E_PER_CLASS, seed=0)
    return out


@pytest.fixture(scope="session")
def trained(e2e_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """(run root, finished process) of one end-to-end CLI training run."""
    root = tmp_path_factory.mktemp("e2e-run")
    proc = run_cli("train", "--data", e2e_data, *train_dirs(root), *E2E_TRAIN_FLAGS, check=True)
    return root, proc


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """Two classes, a handful of images per split: for runs that test plumbing."""
    out = tmp_path / "data"
    synthesize(out, classes=2, per_class=10, seed=1)
    return out


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/moto-api/", timeout=2)
            break
        except requests.RequestException:
            time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
