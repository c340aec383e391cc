"""The int8 model: written by training behind an accuracy gate, chosen by precision."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import requests

from dogbreed.core import hardware, settings
from dogbreed.core.errors import ModelError
from dogbreed.serve import predictor as predict
from dogbreed.serve.predictor import Predictor
from dogbreed.train.data import scan_images
from dogbreed.train.quantize import export_int8, head_nodes
from support.cli import run_cli
from support.servers import start_native, stop, wait_for_ping

JPEG = {"Content-Type": "image/jpeg"}


def test_training_writes_a_checked_int8_model(trained):
    root, proc = trained
    model_dir = root / "model"
    meta = json.loads((model_dir / "metadata.json").read_text())
    report = meta["int8"]
    assert meta["files"]["onnx_int8"] == "model.int8.onnx" and report["kept"]
    assert report["images"] == 40 and report["calibration_images"] == 64
    assert report["val_acc_int8"] >= report["val_acc_fp32"] - report["max_drop"]
    assert report["top1_agreement"] >= 0.9
    assert "int8 model kept" in proc.stderr
    # Weights in 8 bits: about a quarter of the fp32 file.
    int8_size = (model_dir / "model.int8.onnx").stat().st_size
    assert int8_size < 0.3 * (model_dir / "model.onnx").stat().st_size
    # The convolutions run in int8; the linear head stays fp32 (float weights).
    graph = onnx.load(str(model_dir / "model.int8.onnx")).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 20
    (head,) = (n for n in graph.node if n.name in head_nodes(model_dir / "model.int8.onnx"))
    weights = {i.name: i.data_type for i in graph.initializer}
    assert head.op_type == "Gemm" and weights[head.input[1]] == onnx.TensorProto.FLOAT


def test_int8_answers_like_fp32(trained, e2e_data):
    model_dir = trained[0] / "model"
    images = sorted((e2e_data / "test").glob("*/*.jpg"))
    fp32 = Predictor(model_dir, precision="fp32").predict_images(images)
    int8 = Predictor(model_dir, precision="int8").predict_images(images)
    agree = sum(a["index"] == b["index"] for a, b in zip(fp32, int8, strict=True))
    assert agree / len(images) >= 0.9
    gap = max(abs(a["score"] - b["score"]) for a, b in zip(fp32, int8, strict=True))
    assert gap < 0.15


def test_gate_drops_an_int8_model_that_loses_accuracy(trained, e2e_data, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(trained[0] / "model", model_dir)
    classes = sorted(p.name for p in (e2e_data / "train").iterdir())
    train = scan_images(e2e_data / "train", classes)
    valid = scan_images(e2e_data / "valid", classes)
    # An allowance of -1 asks int8 to beat fp32 by 100 points: the gate must refuse it.
    report = export_int8(model_dir, train, valid, max_drop=-1.0)
    assert not report["kept"] and "below fp32's" in report["reason"]
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert "onnx_int8" not in meta["files"] and meta["int8"] == report
    assert not (model_dir / "model.int8.onnx").exists()
    assert not list(model_dir.glob(".*partial"))
    assert Predictor(model_dir, precision="auto").precision == "fp32"
    with pytest.raises(ModelError, match="no int8 model"):
        Predictor(model_dir, precision="int8")
    proc = run_cli("predict", "--model-dir", model_dir, "--precision", "int8", e2e_data)
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1
    assert "no int8 model" in proc.stderr


@pytest.mark.parametrize(
    ("flags", "env", "precision", "expected"),
    [
        ({"avx512_vnni"}, None, None, "int8"),
        ({"asimddp"}, None, "auto", "int8"),
        ({"avx2", "fma"}, None, None, "fp32"),  # no int8 dot products: auto keeps fp32
        (set(), None, "int8", "int8"),  # asked for: served even without them
        ({"avx512_vnni"}, "fp32", None, "fp32"),
        ({"avx512_vnni"}, "fp32", "int8", "int8"),  # the argument wins over the variable
    ],
)
def test_precision_choice(trained, monkeypatch, flags, env, precision, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    if env:
        monkeypatch.setenv(settings.PRECISION, env)
    else:
        monkeypatch.delenv(settings.PRECISION, raising=False)
    got = Predictor(trained[0] / "model", threads=1, precision=precision)
    assert got.precision == expected
    names = {"int8": "model.int8.onnx", "fp32": "model.onnx"}
    batch = np.zeros((1, 3, 224, 224), np.float32)
    direct = predict.open_session(trained[0] / "model" / names[expected], 1)
    np.testing.assert_allclose(
        got.probabilities(batch), predict.softmax(direct.run(None, {"input": batch})[0]), atol=1e-6
    )


def test_server_serves_fp32_on_request(trained, e2e_data, tmp_path):
    """--precision fp32 serves model.onnx even where auto would pick the int8 model.

    (Not in test_serving: the toolkit refuses to start a second server beside its fixture's.)
    """
    model_dir = trained[0] / "model"
    test_images = sorted((e2e_data / "test").glob("*/*.jpg"))[::4]
    url, proc, log = start_native(model_dir, tmp_path, "--precision", "fp32")
    try:
        wait_for_ping(url, proc, log)
        post = f"{url}/invocations"
        got = [
            requests.post(post, data=p.read_bytes(), timeout=60, headers=JPEG).json()
            for p in test_images[:3]
        ]
    finally:
        stop(proc)
    assert "(fp32) on port" in log.read_text()
    cli = run_cli(
        "predict", "--model-dir", model_dir, "--precision", "fp32", "--json", *test_images[:3]
    )
    want = [json.loads(line) for line in cli.stdout.splitlines()]
    assert [g["index"] for g in got] == [w["index"] for w in want]
    np.testing.assert_allclose([g["score"] for g in got], [w["score"] for w in want], atol=1e-5)


def test_unknown_precision_is_refused(trained, monkeypatch):
    monkeypatch.setenv(settings.PRECISION, "fp16")
    with pytest.raises(ModelError, match="must be one of auto, fp32, int8"):
        Predictor(trained[0] / "model")
