"""The images install from one list of pins: pyproject.toml's extras under constraints.txt."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE_EXTRAS = {"serve": ["serve"], "train": ["train", "sagemaker"]}


def name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            package, _, version = line.partition("==")
            found[name(package)] = version.strip()
    return found


def test_each_image_gets_its_extras_as_written_in_pyproject():
    optional = PROJECT["optional-dependencies"]
    for image, extras in IMAGE_EXTRAS.items():
        out = subprocess.run(
            [sys.executable, str(ROOT / "containers" / "requirements.py"), *extras],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert out == [*PROJECT["dependencies"], *(r for e in extras for r in optional[e])], image


def test_every_image_requirement_is_pinned_once_and_no_test_tool_is():
    image_pins, dev_pins = pins(ROOT / "constraints.txt"), pins(ROOT / "constraints-dev.txt")
    optional = PROJECT["optional-dependencies"]
    wanted = {name(r) for e in ("serve", "train", "sagemaker") for r in optional[e]}
    wanted |= {name(r) for r in PROJECT["dependencies"]}
    assert wanted <= set(image_pins), wanted - set(image_pins)
    assert not set(image_pins) & set(dev_pins), "a version written in both files"
    # setuptools and requests: images install them too (the venv, sagemaker-training).
    dev = {name(r) for e in ("dev", "local") for r in optional[e]} - {"setuptools", "requests"}
    assert not dev & set(image_pins), dev & set(image_pins)  # test tools stay out
