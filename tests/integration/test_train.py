"""Training through the CLI, as users and SageMaker run it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dogbreed.core.preprocess import eval_array, open_image
from dogbreed.train.data import display_label
from dogbreed.train.models import build_model
from support.cli import E2E_EPOCHS, TINY_TRAIN_FLAGS, run_cli, train_dirs
from support.containers import opt_ml

METRIC_RE = re.compile(
    r"^epoch=(\d+) train_loss=([\d.]+) val_loss=([\d.]+) val_acc=([\d.]+) "
    r"images_per_s=([\d.]+)$",
    re.M,
)


def test_end_to_end_learns_the_synthetic_set(trained):
    root, proc = trained
    epochs = METRIC_RE.findall(proc.stdout)
    assert [int(e[0]) for e in epochs] == list(range(1, E2E_EPOCHS + 1))
    assert max(float(e[3]) for e in epochs) >= 0.85  # five classes: chance is 0.2
    assert re.search(r"^test_loss=[\d.]+ test_acc=[\d.]+$", proc.stdout, re.M)
    metrics = json.loads((root / "output" / "metrics.json").read_text())
    assert metrics["best_val_acc"] >= 0.85 and metrics["epochs_run"] == E2E_EPOCHS
    for name in (
        "training_curves.png",
        "resources.png",
        "resources.csv",
        "confusions.json",
        "config.json",
    ):
        assert (root / "output" / name).stat().st_size > 0, name


def test_model_dir_artifacts_agree(trained, e2e_data):
    root, _ = trained
    model_dir = root / "model"
    meta = json.loads((model_dir / "metadata.json").read_text())
    classes = sorted(p.name for p in (e2e_data / "train").iterdir())
    assert meta["classes"] == classes
    assert meta["labels"] == [display_label(c) for c in classes]
    assert meta["arch"] == "resnet18" and meta["input"]["size"] == 224
    assert meta["metrics"]["test_acc"] >= 0.8 and "torch" in meta["versions"]

    model = build_model("resnet18", len(classes), "none", frozen=False)
    model.load_state_dict(torch.load(model_dir / "model.pth", weights_only=True))
    model.eval()
    images = sorted((e2e_data / "test").glob("*/*.jpg"))[:5]
    batch = np.stack([eval_array(open_image(p)) for p in images])
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    session = ort.InferenceSession(str(model_dir / "model.onnx"))
    got = session.run(None, {"input": batch})[0]  # batch of 5: the batch axis is dynamic
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_predict_names_held_out_images(trained, e2e_data):
    root, _ = trained
    images = sorted((e2e_data / "test").glob("*/*.jpg"))
    proc = run_cli(
        "predict", "--model-dir", root / "model", "--json", "--top-k", "2", *images, check=True
    )
    answers = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(answers) == len(images)
    right = sum(a["label"] == display_label(Path(a["image"]).parent.name) for a in answers)
    assert right / len(answers) >= 0.8
    assert all(len(a["top_k"]) == 2 and 0 <= a["score"] <= 1 for a in answers)
    human = run_cli("predict", "--model-dir", root / "model", images[0], check=True).stdout
    assert human.startswith(f"{images[0]}: ") and "p=" in human


@pytest.mark.parametrize(
    "pipeline", [["loader"], ["device", "--decode-cache", "off"], ["device"]], ids=str
)
def test_resume_after_kill_continues_the_uninterrupted_run(tiny_data, tmp_path, pipeline):
    """Killed after an epoch and run again, with loader workers kept across epochs (or
    the decode cache): the resumed epochs are the uninterrupted run's, figure for figure
    (augmentation draws are keyed by seed, epoch and image, not by a worker's state)."""
    flags = [*TINY_TRAIN_FLAGS, "--epochs", "4", "--workers", "2", "--pipeline", *pipeline]
    whole = run_cli("train", "--data", tiny_data, *train_dirs(tmp_path / "whole"), *flags)
    assert whole.returncode == 0, whole.stderr[-2000:]
    # --weights none trains the backbone: the device pipeline caches unless told not to
    assert ("decode cache: " in whole.stderr) == (pipeline == ["device"])
    cmd = [sys.executable, "-m", "dogbreed", "train", "--data", str(tiny_data),
           *train_dirs(tmp_path), *flags]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 300
    try:
        for line in proc.stdout:  # bounded by the deadline and by the process's end
            if line.startswith("epoch=1 ") or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert not (tmp_path / "model" / "model.onnx").exists()

    again = run_cli("train", "--data", tiny_data, *train_dirs(tmp_path), *flags, check=True)
    resumed = re.search(r"resumed from .* after epoch (\d+)", again.stderr)
    assert resumed and 1 <= int(resumed.group(1)) < 4
    done = int(resumed.group(1))
    assert int(METRIC_RE.findall(again.stdout)[0][0]) == done + 1
    # epoch, train_loss, val_loss, val_acc: equal to the last figure printed
    tail = [e[:4] for e in METRIC_RE.findall(whole.stdout)][done:]
    assert [e[:4] for e in METRIC_RE.findall(again.stdout)] == tail
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4]
    assert metrics["epochs_run"] == 4
    assert (
        run_cli(
            "predict", "--model-dir", tmp_path / "model", next((tiny_data / "test").glob("*/*.jpg"))
        ).returncode
        == 0
    )


@pytest.mark.parametrize("pipeline", ["loader", "device"])
def test_two_process_ddp_trains_one_model(tiny_data, tmp_path, pipeline):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "dogbreed",
        "train",
        "--data",
        str(tiny_data),
        *train_dirs(tmp_path),
        *TINY_TRAIN_FLAGS,
        "--epochs",
        "2",
        "--pipeline",
        pipeline,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = dict(re.findall(r"rank=(\d) world_size=2 params_sha256=(\w+)", proc.stderr))
    assert set(digests) == {"0", "1"} and digests["0"] == digests["1"]
    assert [int(e[0]) for e in METRIC_RE.findall(proc.stdout)] == [1, 2]  # rank 0 only
    meta = json.loads((tmp_path / "model" / "metadata.json").read_text())
    # Every image counted once across the two ranks.
    assert meta["metrics"]["test_images"] == len(list((tiny_data / "test").glob("*/*.jpg")))


def test_sagemaker_shaped_run(tiny_data, tmp_path):
    base = opt_ml(
        tmp_path / "opt_ml",
        tiny_data,
        {
            "epochs": "1",
            "batch_size": "4",
            "arch": '"resnet18"',
            "weights": "none",
            "lr": "0.001",
            "workers": "0",
            "int8": "false",
            "sagemaker_region": '"us-east-1"',
        },
    )
    proc = run_cli("train", env={"SAGEMAKER_BASE_DIR": str(base)}, check=True)
    assert METRIC_RE.search(proc.stdout)
    assert {p.name for p in (base / "model").iterdir()} == {
        "model.onnx",
        "model.pth",
        "metadata.json",
    }
    assert (base / "output" / "data" / "metrics.json").is_file()
    assert (base / "checkpoints" / "last.pt").is_file()
    assert not (base / "output" / "failure").exists()


def test_sagemaker_bad_hyperparameter_writes_failure(tiny_data, tmp_path):
    base = opt_ml(tmp_path / "opt_ml", tiny_data, {"epochs": "three"})
    proc = run_cli("train", env={"SAGEMAKER_BASE_DIR": str(base)})
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "epochs" in (base / "output" / "failure").read_text()


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing split", "no 'valid/' folder"),
        ("empty class", "empty class folder"),
        ("unknown arch", "unknown arch 'resnet999'"),
        ("bad value", "flag 'epochs'"),
        ("weights file missing", "no such file"),
    ],
)
def test_bad_input_is_one_line(tiny_data, tmp_path, case, message):
    flags = ["--epochs", "1"]
    if case == "missing split":
        os.rename(tiny_data / "valid", tmp_path / "moved")
    elif case == "empty class":
        (tiny_data / "train" / "009.Empty").mkdir()
    elif case == "unknown arch":
        flags += ["--arch", "resnet999"]
    elif case == "bad value":
        flags = ["--epochs", "many"]
    else:
        flags += ["--weights", str(tmp_path / "nope.pth")]
    args = ["train", "--data", tiny_data, *train_dirs(tmp_path), *TINY_TRAIN_FLAGS, *flags]
    proc = run_cli(*args)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def corrupt(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])  # a truncated JPEG


def test_unreadable_images_are_skipped_and_counted(tiny_data, tmp_path):
    corrupt(sorted((tiny_data / "train").glob("*/*.jpg"))[0])
    proc = run_cli(
        "train",
        "--data",
        tiny_data,
        *train_dirs(tmp_path),
        *TINY_TRAIN_FLAGS,
        "--epochs",
        "1",
        "--max-bad-fraction",
        "0.2",
        check=True,
    )
    assert "skipped 1 unreadable" in proc.stderr
    assert json.loads((tmp_path / "output" / "metrics.json").read_text())["skipped_images"] == 1


def test_too_many_unreadable_images_fail_the_run(tiny_data, tmp_path):
    for path in sorted((tiny_data / "train").glob("*/*.jpg"))[:5]:
        corrupt(path)
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), *TINY_TRAIN_FLAGS, "--epochs", "2"
    )
    assert proc.returncode == 3
    assert "could not be decoded" in proc.stderr and "Traceback" not in proc.stderr


def test_early_stopping(tiny_data, tmp_path):
    # A frozen backbone (weights from a file) and a learning rate too small to move the
    # head: val_acc cannot improve after epoch 1.
    import torchvision

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    flags = [str(weights) if f == "none" else f for f in TINY_TRAIN_FLAGS]
    args = ["--epochs", "6", "--patience", "1", "--lr", "1e-12"]
    proc = run_cli("train", "--data", tiny_data, *train_dirs(tmp_path), *flags, *args, check=True)
    assert [int(e[0]) for e in METRIC_RE.findall(proc.stdout)] == [1, 2]
    assert "early stop" in proc.stderr
    metrics = json.loads((tmp_path / "output" / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1


def test_compile_trains_and_exports(tiny_data, tmp_path):
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), *TINY_TRAIN_FLAGS,
        "--epochs", "1", "--compile", check=True,
    )  # fmt: skip
    assert METRIC_RE.search(proc.stdout)
    assert (tmp_path / "model" / "model.onnx").is_file()  # exported from the plain module


def test_compile_without_a_compiler_fails_in_one_line(tiny_data, tmp_path):
    bindir = str(Path(sys.executable).parent)  # python and nothing else on PATH
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), *TINY_TRAIN_FLAGS, "--compile",
        env={"PATH": bindir, "CC": "no-such-compiler"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "C compiler" in proc.stderr
