"""Test helpers: running the images on the Docker engine, and SageMaker's /opt/ml tree."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

TRAIN_IMAGE = os.environ.get("TRAIN_IMAGE", "dogbreed-train") + ":latest"
SERVE_IMAGE = os.environ.get("SERVE_IMAGE", "dogbreed-serve") + ":latest"


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {proc.stderr[-2000:]}")
    return proc


def image_present(image: str) -> bool:
    if shutil.which("docker") is None:
        return False
    return docker("image", "inspect", image, check=False, timeout=30).returncode == 0


def opt_ml(
    base: Path,
    data: Path,
    hyperparameters: dict,
    host: str = "algo-1",
    hosts: tuple[str, ...] = ("algo-1",),
    interface: str = "lo",
) -> Path:
    """A /opt/ml tree as SageMaker mounts it, with a copy of `data` as the training channel."""
    import json

    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": host, "hosts": list(hosts), "network_interface_name": interface}
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {"training": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}
        )
    )
    shutil.copytree(data, base / "input" / "data" / "training")
    for sub in ("model", "output", "checkpoints"):
        (base / sub).mkdir()
    return base


def add_hosts(*names: str) -> list[str]:
    """--add-host flags that make SageMaker-style host names resolve to loopback."""
    return [f"--add-host={name}:127.0.0.1" for name in names]
