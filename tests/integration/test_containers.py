"""The train image run as SageMaker and an EC2 host run it, on the real Docker engine."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from support.containers import SERVE_IMAGE, TRAIN_IMAGE, add_hosts, docker, image_present, opt_ml

pytestmark = pytest.mark.skipif(
    not image_present(TRAIN_IMAGE), reason=f"{TRAIN_IMAGE} not built (make build)"
)

HPS = {
    "epochs": "1",
    "batch_size": "4",
    "arch": '"resnet18"',
    "weights": "none",
    "lr": "0.001",
    "workers": "0",
    "sagemaker_program": '"train"',
}
METRIC_RE = re.compile(
    r"^epoch=\d+ train_loss=[\d.]+ val_loss=[\d.]+ val_acc=[\d.]+ "
    r"images_per_s=[\d.]+$",
    re.M,
)


def run_train(
    tree: Path,
    *extra: str,
    name: str | None = None,
    env: dict | None = None,
    args: tuple[str, ...] = ("train",),
) -> subprocess.Popen:
    name = name or f"dogbreed-test-{uuid.uuid4().hex[:8]}"
    flags = [f"--env={k}={v}" for k, v in (env or {}).items()]
    cmd = [
        "docker",
        "run",
        "--rm",
        "--name",
        name,
        "--network",
        "host",
        *flags,
        *extra,
        "-v",
        f"{tree}:/opt/ml",
        TRAIN_IMAGE,
        *args,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def test_sagemaker_single_host(tiny_data, tmp_path):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, HPS)
    proc = run_train(tree)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert METRIC_RE.search(out) and re.search(r"^test_acc=|test_acc=", out, re.M)
    assert {"model.onnx", "model.pth", "metadata.json"} <= {
        p.name for p in (tree / "model").iterdir()
    }
    assert (tree / "output" / "data" / "metrics.json").is_file()
    assert (tree / "checkpoints" / "last.pt").is_file()


def test_sagemaker_bad_hyperparameter_fails_with_reason(tiny_data, tmp_path):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, {**HPS, "batch_size": "lots"})
    proc = run_train(tree)
    out = finish(proc, timeout=300)
    assert proc.returncode != 0
    assert "batch-size" in (tree / "output" / "failure").read_text()
    assert "Traceback" not in out


def test_unresolvable_hosts_fail_fast(tiny_data, tmp_path):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, HPS, hosts=("algo-1", "algo-nowhere"))
    start = time.monotonic()
    proc = run_train(tree, *add_hosts("algo-1"), env={"DOGBREED_HOST_WAIT_S": "3"})
    finish(proc, timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 120
    assert "algo-nowhere" in (tree / "output" / "failure").read_text()


def two_hosts(
    tiny_data: Path, tmp_path: Path, hps: dict, interface: str = "lo"
) -> tuple[dict, dict]:
    """Trees and run settings for a 2-host job on loopback."""
    port = str(random.randrange(20000, 30000))
    hosts = ("algo-1", "algo-2")
    trees = {
        h: opt_ml(tmp_path / h, tiny_data, hps, host=h, hosts=hosts, interface=interface)
        for h in hosts
    }
    env = {"DOGBREED_MASTER_PORT": port, "DOGBREED_DIST_TIMEOUT": "90"}
    return trees, env


@pytest.mark.parametrize("interface", ["lo", "ethwe"])
def test_two_instances_form_one_job(tiny_data, tmp_path, interface):
    """`ethwe`: what one local launcher writes for containers that have no such interface."""
    trees, env = two_hosts(tiny_data, tmp_path, {**HPS, "epochs": "2"}, interface)
    procs = {h: run_train(trees[h], *add_hosts(*trees), env=env) for h in trees}
    outs = {h: finish(p) for h, p in procs.items()}
    for host, proc in procs.items():
        assert proc.returncode == 0, f"{host}:\n{outs[host][-3000:]}"
    digests = re.findall(r"rank=(\d) world_size=2 params_sha256=(\w+)", "".join(outs.values()))
    assert len(digests) == 2 and digests[0][1] == digests[1][1]
    assert (trees["algo-1"] / "model" / "model.onnx").is_file()
    assert not any((trees["algo-2"] / "model").iterdir())  # rank 0 alone writes
    assert len(METRIC_RE.findall(outs["algo-1"])) == 2 and not METRIC_RE.search(outs["algo-2"])
    if interface == "ethwe":
        assert "does not exist here" in outs["algo-1"]


def test_docker_stop_keeps_the_checkpoint_and_the_rerun_resumes(tiny_data, tmp_path):
    """SageMaker (and a spot reclaim) stop a job with SIGTERM and 120 s of grace."""
    epochs = 6
    tree = opt_ml(tmp_path / "job", tiny_data, {**HPS, "epochs": str(epochs)})
    name = f"dogbreed-test-stop-{uuid.uuid4().hex[:6]}"
    proc = run_train(tree, name=name)
    last = tree / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 300
        while not last.exists():
            assert time.monotonic() < deadline, "training never finished an epoch"
            assert proc.poll() is None, finish(proc)[-3000:]
            time.sleep(0.5)
        start = time.monotonic()
        docker("stop", "-t", "120", name, timeout=180)
        took = time.monotonic() - start
        first = finish(proc, timeout=60)
    finally:
        docker("rm", "-f", name, check=False, timeout=60)
    done = len(METRIC_RE.findall(first))
    print(f"docker stop: the job ended {took:.1f} s after SIGTERM, {done} epochs done")
    assert took < 120 and done < epochs, first[-2000:]
    assert not list((tree / "checkpoints").glob("*.tmp"))  # never half a file
    again = finish(run_train(tree), timeout=600)
    resumed = [int(m) for m in re.findall(r"^epoch=(\d+) ", again, re.M)]
    assert resumed and resumed[0] > 1 and resumed[-1] == epochs, again[-3000:]
    assert (tree / "model" / "model.onnx").is_file()
    metrics = json.loads((tree / "output" / "data" / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs and len(metrics["history"]) == epochs, metrics


def test_stopping_one_host_fails_the_other(tiny_data, tmp_path):
    trees, env = two_hosts(tiny_data, tmp_path, {**HPS, "epochs": "200"})
    names = {h: f"dogbreed-test-{h}-{uuid.uuid4().hex[:6]}" for h in trees}
    procs = {h: run_train(trees[h], *add_hosts(*trees), name=names[h], env=env) for h in trees}
    try:
        deadline = time.monotonic() + 300
        while not (trees["algo-1"] / "checkpoints" / "last.pt").exists():
            assert time.monotonic() < deadline, "training never reached epoch 1"
            assert procs["algo-1"].poll() is None, finish(procs["algo-1"])[-3000:]
            time.sleep(1)
        docker("kill", names["algo-2"], check=False)
        start = time.monotonic()
        out = finish(procs["algo-1"], timeout=240)
        took = time.monotonic() - start
        print(f"host algo-2 killed: algo-1 exited {procs['algo-1'].returncode} after {took:.0f} s")
        assert procs["algo-1"].returncode != 0, out[-2000:]
        assert took < 120  # DOGBREED_DIST_TIMEOUT (90 s here) bounds the wait
        assert (trees["algo-1"] / "output" / "failure").read_text().strip()
    finally:
        for name in names.values():
            docker("rm", "-f", name, check=False, timeout=60)
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def test_ec2_style_plain_flags(tiny_data, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cmd = [
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "-v",
        f"{tiny_data}:/data:ro",
        "-v",
        f"{out_dir}:/out",
        TRAIN_IMAGE,
        "train",
        "--data",
        "/data",
        "--model-dir",
        "/out/model",
        "--output-dir",
        "/out/output",
        "--checkpoint-dir",
        "/out/ckpt",
        "--arch",
        "resnet18",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--workers",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert METRIC_RE.search(proc.stdout)
    meta = json.loads((out_dir / "model" / "metadata.json").read_text())
    assert meta["arch"] == "resnet18" and meta["num_classes"] == 2


@pytest.mark.parametrize(
    ("image", "present", "absent"),
    [
        (TRAIN_IMAGE, {"torch", "sagemaker-training"}, set()),
        (SERVE_IMAGE, {"onnxruntime", "multi-model-server"}, {"torch"}),
    ],
)
def test_each_image_carries_an_sbom_of_its_python_environment(image, present, absent):
    if not image_present(image):
        pytest.skip(f"{image} not built")
    label = "org.opencontainers.image.sbom"
    path = docker("image", "inspect", "-f", f'{{{{ index .Config.Labels "{label}" }}}}', image)
    path = path.stdout.strip()
    assert path.startswith("/"), path
    doc = json.loads(docker("run", "--rm", "--entrypoint", "cat", image, path).stdout)
    assert doc["bomFormat"] == "CycloneDX"
    names = {c["name"].lower().replace("_", "-") for c in doc["components"]}
    assert {"dogbreed", *present} <= names and not names & absent, sorted(names)
    assert "cyclonedx-bom" not in names  # the tool that wrote it is not in the image
    version = next(c["version"] for c in doc["components"] if c["name"].lower() == "dogbreed")
    listed = docker("run", "--rm", "--entrypoint", "python", image, "-c",
                    "import importlib.metadata as m; print(m.version('dogbreed'))")  # fmt: skip
    assert version == listed.stdout.strip()


def test_serve_image_runs_as_non_root():
    if not image_present(SERVE_IMAGE):
        pytest.fail(f"{SERVE_IMAGE} not built")
    uid = docker("run", "--rm", "--network", "host", SERVE_IMAGE, "id", "-u").stdout.strip()
    assert uid not in ("", "0")
    labels = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Labels}}", SERVE_IMAGE).stdout
    )
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert (
        docker(
            "run",
            "--rm",
            "--network",
            "host",
            SERVE_IMAGE,
            "python",
            "-c",
            "import importlib.util as u; print(u.find_spec('torch') is None)",
        ).stdout.strip()
        == "True"
    )  # no torch in the serve image
