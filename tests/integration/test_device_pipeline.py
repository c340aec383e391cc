"""The device data pipeline: the parts that run anywhere are tested on the CPU here;
the CUDA decoder's own tests run where a GPU is present."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from dogbreed.train.device_data import (
    EncodedDataset,
    collate_encoded,
    prepare,
)
from support.cli import E2E_TRAIN_FLAGS, run_cli, train_dirs

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# One 8-bit level after ImageNet normalisation (Pillow rounds to uint8 after resizing).


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained_on_device(e2e_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e-device")
    flags = [*E2E_TRAIN_FLAGS, "--pipeline", "device"]
    proc = run_cli("train", "--data", e2e_data, *train_dirs(root), *flags, check=True)
    return root, proc


def test_device_pipeline_learns_as_the_loader_pipeline(trained, trained_on_device):
    """Same recipe, same data: the device pipeline's accuracy equals the CPU path's within noise."""
    loader_metrics = json.loads((trained[0] / "output" / "metrics.json").read_text())
    device_metrics = json.loads((trained_on_device[0] / "output" / "metrics.json").read_text())
    assert "device pipeline" in trained_on_device[1].stderr
    for key in ("best_val_acc", "test_acc"):
        assert device_metrics[key] >= 0.85, key
        assert abs(device_metrics[key] - loader_metrics[key]) <= 0.1, key  # 4 of 40 images


@CUDA
def test_cuda_decode_matches_cpu_decode(photos):
    files = [photos["bullmastiff"], photos["dalmatian"]]
    ds = EncodedDataset([(p, 0) for p in files], train=False)
    batch = collate_encoded([ds[0], ds[1]])
    on_gpu, *_ = prepare(batch, torch.device("cuda"), False, True)
    on_cpu, *_ = prepare(batch, torch.device("cpu"), False, True)
    assert on_gpu.device.type == "cuda"
    # nvjpeg and libjpeg round their inverse DCTs differently: a few levels at most.
    assert (on_gpu.cpu() - on_cpu).abs().mean() < 0.02


@CUDA
def test_cuda_training_with_the_device_pipeline(tiny_data, tmp_path):
    proc = run_cli(
        "train", "--data", tiny_data, *train_dirs(tmp_path), "--arch", "resnet18",
        "--weights", "none", "--epochs", "1", "--batch-size", "8", "--device", "cuda",
        check=True,
    )  # fmt: skip
    assert "device pipeline" in proc.stderr and "bf16" in proc.stderr
    assert (tmp_path / "model" / "model.onnx").is_file()
