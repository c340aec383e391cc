"""Training from a feature bank through the CLI: a run, a resume, two processes, parity."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision

from dogbreed.train.synth import synthesize
from support.cli import TINY_TRAIN_FLAGS, run_cli, train_dirs

METRIC_RE = re.compile(
    r"^epoch=(\d+) train_loss=([\d.]+) val_loss=([\d.]+) val_acc=([\d.]+) "
    r"images_per_s=([\d.]+)$",
    re.M,
)
BANK_RE = re.compile(r"rank=(\d) feature bank (encoded|loaded) .*: (\d+) training images x (\d+)")


@pytest.fixture(scope="module")
def frozen_weights(tmp_path_factory) -> Path:
    """A backbone weights file: with one, the backbone is frozen (random weights: plumbing)."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def bank_flags(weights: Path) -> list[str]:
    return [str(weights) if f == "none" else f for f in TINY_TRAIN_FLAGS] + ["--views", "2"]


def train_cmd(data: Path, root: Path, weights: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "dogbreed", "train", "--data", str(data), *train_dirs(root),
        *bank_flags(weights), *extra,
    ]  # fmt: skip


def test_a_frozen_backbone_trains_from_the_bank_and_exports(tiny_data, tmp_path, frozen_weights):
    args = ["--epochs", "2", "--int8", "true"]
    proc = subprocess.run(
        train_cmd(tiny_data, tmp_path, frozen_weights, *args), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [int(e[0]) for e in METRIC_RE.findall(proc.stdout)] == [1, 2]
    (bank,) = BANK_RE.findall(proc.stderr)
    assert bank == ("0", "encoded", "16", "2")  # 2 classes x 8 training images, 2 views
    assert "feature bank on (2 views)" in proc.stderr
    phases = re.search(r"phase_seconds (.*)", proc.stderr).group(1)
    assert {p.split("=")[0] for p in phases.split()} == {
        "encode", "train", "evaluate", "export", "int8",
    }  # fmt: skip
    model = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"model.onnx", "model.pth", "metadata.json"} <= model
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["test_images"] == 2
    # The kept bank is beside the checkpoints, not among them (those go to S3).
    assert list((tmp_path / "feature-bank").glob("*/rank0of1.pt"))
    assert {p.name for p in (tmp_path / "checkpoints").iterdir()} <= {"last.pt", "best.pt"}


def test_feature_bank_off_runs_the_images_every_epoch(tiny_data, tmp_path, frozen_weights):
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), *bank_flags(frozen_weights),
        "--epochs", "1", "--feature-bank", "off", check=True,
    )  # fmt: skip
    assert "feature bank off" in proc.stderr and not BANK_RE.search(proc.stderr)
    assert not (tmp_path / "feature-bank").exists()


def test_feature_bank_on_with_a_trained_backbone_is_one_line(tiny_data, tmp_path):
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), *TINY_TRAIN_FLAGS,
        "--feature-bank", "on",
    )  # fmt: skip
    assert proc.returncode == 2 and "needs a frozen backbone" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_killed_run_resumes_without_encoding_again(tiny_data, tmp_path, frozen_weights):
    args = ["--epochs", "4", "--lr", "0.01"]
    whole_cmd = train_cmd(tiny_data, tmp_path / "whole", frozen_weights, *args)
    whole = run_cli(*whole_cmd[3:], check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        train_cmd(tiny_data, killed, frozen_weights, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:  # bounded by the deadline and by the process's end
            if line.startswith("epoch=1 ") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    again = run_cli(*train_cmd(tiny_data, killed, frozen_weights, *args)[3:], check=True)
    assert BANK_RE.search(again.stderr).group(2) == "loaded"
    resumed = int(re.search(r"resumed from .* after epoch (\d+)", again.stderr).group(1))
    assert 1 <= resumed < 4
    # The bank, its draws and the head's state are all restored: the resumed epochs are
    # the uninterrupted run's, figure for figure.
    assert METRIC_RE.findall(again.stdout)[0][0] == str(resumed + 1)
    tail = [e[:4] for e in METRIC_RE.findall(whole.stdout)][resumed:]
    assert [e[:4] for e in METRIC_RE.findall(again.stdout)] == tail


def test_two_processes_each_encode_their_shard_and_agree(tiny_data, tmp_path, frozen_weights):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        *train_cmd(tiny_data, tmp_path, frozen_weights, "--epochs", "2")[1:],
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    banks = {rank: (verb, int(n)) for rank, verb, n, _ in BANK_RE.findall(proc.stderr)}
    assert banks == {"0": ("encoded", 8), "1": ("encoded", 8)}  # 16 images, half each
    digests = dict(re.findall(r"rank=(\d) world_size=2 params_sha256=(\w+)", proc.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    assert [int(e[0]) for e in METRIC_RE.findall(proc.stdout)] == [1, 2]  # rank 0 only
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert meta["metrics"]["test_images"] == len(list((tiny_data / "test").glob("*/*.jpg")))
    assert len(list((tmp_path / "feature-bank").glob("*/rank*of2.pt"))) == 2


def test_unreadable_training_images_are_counted_from_the_bank(tiny_data, tmp_path, frozen_weights):
    bad = sorted((tiny_data / "train").glob("*/*.jpg"))[0]
    bad.write_bytes(bad.read_bytes()[:300])
    proc = run_cli(
        *train_cmd(tiny_data, tmp_path, frozen_weights, "--epochs", "1",
                   "--max-bad-fraction", "0.2")[3:],
        check=True,
    )  # fmt: skip
    assert "skipped 1 unreadable" in proc.stderr
    assert json.loads((tmp_path / "output" / "metrics.json").read_text())["skipped_images"] == 1


# --- Parity: real (trained, then frozen) features, both loops, the same data and seeds ---


@pytest.fixture(scope="module")
def pretrained_backbone(tmp_path_factory) -> Path:
    """A ResNet-18 trained end to end on one synthetic set (5 classes) for a few epochs:
    a backbone with real features, frozen below for another set with other classes."""
    root = tmp_path_factory.mktemp("pretrain")
    synthesize(root / "data", classes=5, per_class=40, seed=11)
    run_cli(
        "train", "--data", root / "data", *train_dirs(root), "--arch", "resnet18",
        "--weights", "none", "--epochs", "3", "--batch-size", "8", "--lr", "0.001",
        "--device", "cpu", "--int8", "false", "--seed", "0", check=True,
    )  # fmt: skip
    return root / "model" / "model.pth"


@pytest.mark.slow
def test_bank_accuracy_matches_the_image_loop(pretrained_backbone, tmp_path):
    data = tmp_path / "data"
    synthesize(data, classes=6, per_class=60, seed=23)  # other classes; 48/6/6 a class
    accs = {}
    for mode in ("off", "on"):
        proc = run_cli(
            "train", "--data", data, *train_dirs(tmp_path / mode), "--arch", "resnet18",
            "--weights", pretrained_backbone, "--epochs", "4", "--batch-size", "8",
            "--lr", "0.01", "--device", "cpu", "--int8", "false", "--seed", "0",
            "--feature-bank", mode, "--views", "2", check=True,
        )  # fmt: skip
        accs[mode] = max(float(e[3]) for e in METRIC_RE.findall(proc.stdout))
    assert accs["off"] >= 0.5  # the frozen features carry the classes (chance: 1/6)
    # 36 validation images: one image is 2.8 points, so allow one image's difference
    # (the metric line rounds to 4 places).
    assert accs["on"] >= accs["off"] - 1 / 36 - 1e-4, accs
