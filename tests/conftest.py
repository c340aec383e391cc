"""Shared fixtures: synthetic datasets, a model trained once per session, a CLI runner."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dogbreed.train.synth import synthesize
from servers import free_port

# The end-to-end training recipe: learnable in 4 CPU epochs from random weights
# (best val_acc 0.95-1.0 on 40 validation images over seeds and fp32/bf16; with 60
# images a class and 3 epochs it was 0.80-0.93).
E2E_CLASSES = 5
E2E_PER_CLASS = 80
E2E_EPOCHS = 4
E2E_TRAIN_FLAGS = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--epochs",
    str(E2E_EPOCHS),
    "--batch-size",
    "8",
    "--lr",
    "0.001",
    "--device",
    "cpu",
    "--seed",
    "0",
]


def run_cli(
    *args: str | os.PathLike, env: dict | None = None, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess:
    """Run `python -m dogbreed ARGS` as a user would; returns the finished process."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "dogbreed", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"dogbreed {args} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def train_dirs(root: Path) -> list[str]:
    return [
        "--model-dir",
        str(root / "model"),
        "--output-dir",
        str(root / "output"),
        "--checkpoint-dir",
        str(root / "checkpoints"),
    ]


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


TINY_TRAIN_FLAGS = [
    "--arch",
    "resnet18",
    "--weights",
    "none",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--int8",  # plumbing runs; the int8 export is tested on the end-to-end model
    "false",
]


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
