"""The train image run as SageMaker and an EC2 host run it, on the real Docker engine."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from pathlib import Path

import docker
import pytest

from dogbreed.local.docker_engine import Run
from support.containers import (
    SERVE_IMAGE,
    TRAIN_IMAGE,
    Started,
    add_hosts,
    engine,
    image_present,
    labelled_run,
    mount,
    opt_ml,
    run_detached,
    run_once,
)
from support.servers import free_port

pytestmark = pytest.mark.skipif(
    not image_present(TRAIN_IMAGE), reason=f"{TRAIN_IMAGE} not built (make build)"
)

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
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


@pytest.fixture
def containers():
    """The Run the test's containers belong to: each removed by id when the test ends."""
    with labelled_run("train") as run:
        yield run


def run_train(
    run: Run,
    tree: Path,
    *,
    extra_hosts: dict[str, str] | None = None,
    name: str | None = None,
    env: dict | None = None,
    args: tuple[str, ...] = ("train",),
) -> Started:
    """`docker run --network host [--add-host ...] -v TREE:/opt/ml TRAIN_IMAGE train`."""
    return run_detached(
        run,
        TRAIN_IMAGE,
        list(args),
        name=name or f"dogbreed-test-{uuid.uuid4().hex[:8]}",
        network_mode="host",
        environment=env or {},
        extra_hosts=extra_hosts,
        volumes=mount(tree, "/opt/ml"),
    )


def finish(proc: Started, timeout: float = 600) -> str:
    proc.wait(timeout)
    return proc.output


def test_sagemaker_single_host(tiny_data, tmp_path, containers):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, HPS)
    proc = run_train(containers, tree)
    out = finish(proc)
    assert proc.returncode == 0, out[-3000:]
    assert METRIC_RE.search(out) and re.search(r"^test_acc=|test_acc=", out, re.M)
    assert {"model.onnx", "model.pth", "metadata.json"} <= {
        p.name for p in (tree / "model").iterdir()
    }
    assert (tree / "output" / "data" / "metrics.json").is_file()
    assert (tree / "checkpoints" / "last.pt").is_file()


def test_sagemaker_bad_hyperparameter_fails_with_reason(tiny_data, tmp_path, containers):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, {**HPS, "batch_size": "lots"})
    proc = run_train(containers, tree)
    out = finish(proc, timeout=300)
    assert proc.returncode != 0
    assert "batch-size" in (tree / "output" / "failure").read_text()
    assert "Traceback" not in out


def test_unresolvable_hosts_fail_fast(tiny_data, tmp_path, containers):
    tree = opt_ml(tmp_path / "opt_ml", tiny_data, HPS, hosts=("algo-1", "algo-nowhere"))
    start = time.monotonic()
    proc = run_train(
        containers, tree, extra_hosts=add_hosts("algo-1"), env={"DOGBREED_HOST_WAIT_S": "3"}
    )
    finish(proc, timeout=300)
    assert proc.returncode != 0 and time.monotonic() - start < 120
    assert "algo-nowhere" in (tree / "output" / "failure").read_text()


def two_hosts(
    tiny_data: Path, tmp_path: Path, hps: dict, interface: str = "lo"
) -> tuple[dict, dict]:
    """Trees and run settings for a 2-host job on loopback."""
    port = str(free_port())
    hosts = ("algo-1", "algo-2")
    trees = {
        h: opt_ml(tmp_path / h, tiny_data, hps, host=h, hosts=hosts, interface=interface)
        for h in hosts
    }
    env = {"DOGBREED_MASTER_PORT": port}  # the default collective timeout (90 s)
    return trees, env


@pytest.mark.parametrize("interface", ["lo", "ethwe"])
def test_two_instances_form_one_job(tiny_data, tmp_path, containers, interface):
    """`ethwe`: what one local launcher writes for containers that have no such interface."""
    trees, env = two_hosts(tiny_data, tmp_path, {**HPS, "epochs": "2"}, interface)
    procs = {
        h: run_train(containers, trees[h], extra_hosts=add_hosts(*trees), env=env) for h in trees
    }
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


def test_docker_stop_keeps_the_checkpoint_and_the_rerun_resumes(tiny_data, tmp_path, containers):
    """SageMaker (and a spot reclaim) stop a job with SIGTERM and 120 s of grace."""
    epochs = 6
    tree = opt_ml(tmp_path / "job", tiny_data, {**HPS, "epochs": str(epochs)})
    name = f"dogbreed-test-stop-{uuid.uuid4().hex[:6]}"
    proc = run_train(containers, tree, name=name)
    last = tree / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while not last.exists():
        assert time.monotonic() < deadline, "training never finished an epoch"
        assert proc.poll() is None, finish(proc)[-3000:]
        time.sleep(0.5)
    start = time.monotonic()
    proc.container.stop(timeout=120)  # docker stop -t 120
    took = time.monotonic() - start
    first = finish(proc, timeout=60)
    done = len(METRIC_RE.findall(first))
    print(f"docker stop: the job ended {took:.1f} s after SIGTERM, {done} epochs done")
    assert took < 120 and done < epochs, first[-2000:]
    assert not list((tree / "checkpoints").glob("*.tmp"))  # never half a file
    again = finish(run_train(containers, tree), timeout=600)
    resumed = [int(m) for m in re.findall(r"^epoch=(\d+) ", again, re.M)]
    assert resumed and resumed[0] > 1 and resumed[-1] == epochs, again[-3000:]
    assert (tree / "model" / "model.onnx").is_file()
    metrics = json.loads((tree / "output" / "data" / "metrics.json").read_text())
    assert metrics["epochs_run"] == epochs and len(metrics["history"]) == epochs, metrics


def test_stopping_one_host_fails_the_other(tiny_data, tmp_path, containers):
    trees, env = two_hosts(tiny_data, tmp_path, {**HPS, "epochs": "200"})
    names = {h: f"dogbreed-test-{h}-{uuid.uuid4().hex[:6]}" for h in trees}
    procs = {
        h: run_train(containers, trees[h], extra_hosts=add_hosts(*trees), name=names[h], env=env)
        for h in trees
    }
    deadline = time.monotonic() + 300
    while not (trees["algo-1"] / "checkpoints" / "last.pt").exists():
        assert time.monotonic() < deadline, "training never reached epoch 1"
        assert procs["algo-1"].poll() is None, finish(procs["algo-1"])[-3000:]
        time.sleep(1)
    with contextlib.suppress(docker.errors.APIError):  # docker kill: SIGKILL, gone or not
        procs["algo-2"].container.kill()
    start = time.monotonic()
    out = finish(procs["algo-1"], timeout=240)
    took = time.monotonic() - start
    print(f"host algo-2 killed: algo-1 exited {procs['algo-1'].returncode} after {took:.0f} s")
    assert procs["algo-1"].returncode != 0, out[-2000:]
    assert took < 120  # the default DOGBREED_DIST_TIMEOUT (90 s) bounds the wait
    assert (trees["algo-1"] / "output" / "failure").read_text().strip()


def test_ec2_style_plain_flags(tiny_data, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    command = [
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
    proc = run_once(
        TRAIN_IMAGE,
        command,
        network_mode="host",
        volumes={**mount(tiny_data, "/data", read_only=True), **mount(out_dir, "/out")},
        timeout=600,
        check=False,
    )
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
    path = engine().images.get(image).labels.get(label, "")
    assert path.startswith("/"), path
    doc = json.loads(run_once(image, [path], entrypoint=["cat"], network_mode=None).stdout)
    assert doc["bomFormat"] == "CycloneDX"
    names = {c["name"].lower().replace("_", "-") for c in doc["components"]}
    assert {"dogbreed", *present} <= names and not names & absent, sorted(names)
    assert "cyclonedx-bom" not in names  # the tool that wrote it is not in the image
    version = next(c["version"] for c in doc["components"] if c["name"].lower() == "dogbreed")
    listed = run_once(image, ["-c", "import importlib.metadata as m; print(m.version('dogbreed'))"],
                      entrypoint=["python"], network_mode=None)  # fmt: skip
    assert version == listed.stdout.strip()


@pytest.mark.parametrize("image", [TRAIN_IMAGE, SERVE_IMAGE])
def test_images_install_the_pinned_versions_and_no_build_host_certificate(image):
    """One list of versions (constraints.txt); the build host's CA bundle, which the
    builds trust, is in no layer of the image and nowhere in its history."""
    if not image_present(image):
        pytest.fail(f"{image} not built")
    history = engine().images.get(image).history()
    assert not [h["CreatedBy"] for h in history if "host-ca" in (h.get("CreatedBy") or "")]
    assert run_once(image, ["/tmp"], entrypoint=["ls", "-A"], network_mode=None).stdout == ""
    listed = run_once(
        image,
        ["-c", "import importlib.metadata as m, json; "
               "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"],
        entrypoint=["python"],
        network_mode=None,
    )  # fmt: skip
    norm = lambda name: name.lower().replace("_", "-").replace(".", "-")  # noqa: E731
    installed = {norm(k): v for k, v in json.loads(listed.stdout).items()}
    pins = dict(
        (norm(name), version)
        for name, _, version in (
            line.partition("==") for line in CONSTRAINTS.read_text().splitlines() if "==" in line
        )
    )
    off = {
        n: (v, pins[n]) for n, v in installed.items() if n in pins and v.split("+")[0] != pins[n]
    }
    assert not off, off
    unpinned = set(installed) - set(pins) - {"dogbreed", "pip"}
    assert not unpinned, unpinned


def test_serve_image_declares_a_healthcheck_on_ping():
    if not image_present(SERVE_IMAGE):
        pytest.fail(f"{SERVE_IMAGE} not built")
    check = engine().images.get(SERVE_IMAGE).attrs["Config"]["Healthcheck"]
    assert "/ping" in " ".join(check["Test"]) and check["StartPeriod"] >= 240 * 10**9


def test_serve_image_runs_as_non_root():
    if not image_present(SERVE_IMAGE):
        pytest.fail(f"{SERVE_IMAGE} not built")
    uid = run_once(SERVE_IMAGE, ["id", "-u"], network_mode="host").stdout.strip()
    assert uid not in ("", "0")
    labels = engine().images.get(SERVE_IMAGE).labels
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert (
        run_once(
            SERVE_IMAGE,
            ["python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
            network_mode="host",
        ).stdout.strip()
        == "True"
    )  # no torch in the serve image
