"""`dogbreed local train --hosts 2`, then `dogbreed local serve` on its model.tar.gz.

The commands run as a user runs them; the Docker SDK only looks for what they
leave behind (containers and networks labelled with the run).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from support.cli import run_cli
from support.containers import SERVE_IMAGE, TRAIN_IMAGE, image_present
from support.servers import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (image_present(TRAIN_IMAGE) and image_present(SERVE_IMAGE)),
        reason="images not built (make build)",
    ),
]

HPS = ["arch=resnet18", "weights=none", "epochs=1", "batch-size=4", "workers=0", "seed=0"]


def stop_command(proc: subprocess.Popen, run_id: str | None) -> None:
    """Ctrl-C a `dogbreed local` command still running (it removes its own containers);
    kill it only if it hangs. When the test failed, also remove by id what its run left,
    so that a failure does not leave a container serving on this machine."""
    failing = sys.exc_info()[0] is not None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    if failing and run_id is not None:
        import docker

        client = docker.from_env(timeout=60)
        try:
            label = {"label": f"dogbreed.local={run_id}"}
            for container in client.containers.list(all=True, filters=label):
                container.remove(force=True)
            for network in client.networks.list(filters=label):
                network.remove()
        finally:
            client.close()


def leftovers(run_id: str) -> list[str]:
    """Containers (running or not) and networks labelled with the run."""
    import docker

    client = docker.from_env(timeout=60)
    try:
        label = {"label": f"dogbreed.local={run_id}"}
        containers = client.containers.list(all=True, filters=label)
        networks = client.networks.list(filters=label)
        return [c.name for c in containers] + [f"network {n.name}" for n in networks]
    finally:
        client.close()


def wait_for_line(proc: subprocess.Popen, log: Path, prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} first:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"no line starting {prefix!r} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def test_two_host_training_then_the_endpoint_then_ctrl_c(tiny_data, tmp_path):
    tag = uuid.uuid4().hex[:8]
    out = tmp_path / "out"
    train_id = f"dogbreed-test-train-{tag}"
    hps = [a for hp in HPS for a in ("--hp", hp)]
    proc = run_cli(
        *("local", "train", "--image", TRAIN_IMAGE, "--hosts", "2"),
        *("--data", tiny_data, "--out", out, "--run-id", train_id, *hps),
        *("--env", "DOGBREED_DIST_TIMEOUT=120"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Each host's log streamed with its name in front; one job, rank 0 alone writes.
    assert "algo-1 | " in proc.stdout and "algo-2 | " in proc.stdout
    assert "rank=1 world_size=2" in proc.stdout and "rank=0 world_size=2" in proc.stdout
    assert leftovers(train_id) == []
    with tarfile.open(out / "model.tar.gz", "r:gz") as tar:
        names = set(tar.getnames())
    assert {"model.onnx", "metadata.json"} <= names and not any("/" in n for n in names)
    assert not any((out / "hosts" / "algo-2" / "model").iterdir())
    assert (out / "output" / "data" / "metrics.json").is_file()
    config = out / "hosts" / "algo-2" / "input" / "config"
    assert json.loads((config / "resourceconfig.json").read_text())["current_host"] == "algo-2"
    assert json.loads((config / "hyperparameters.json").read_text())["epochs"] == "1"

    serve_id = f"dogbreed-test-serve-{tag}"
    port = free_port()
    log = tmp_path / "serve.log"
    serve = ["local", "serve", "--image", SERVE_IMAGE, "--model", str(out / "model.tar.gz")]
    serve += ["--port", str(port), "--run-id", serve_id, "--wait", "180"]
    with log.open("w") as fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", *serve],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        line = wait_for_line(server, log, "endpoint: ", timeout=240)
        url = f"http://127.0.0.1:{port}"
        assert url in line
        image = next(tiny_data.glob("test/*/*.jpg"))
        resp = requests.post(
            f"{url}/invocations",
            data=image.read_bytes(),
            headers={"Content-Type": "image/jpeg", "Accept": "application/json"},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        labels = {d.name.split(".", 1)[1].replace("_", " ") for d in tiny_data.glob("train/*")}
        assert resp.json()["label"] in labels
        assert "endpoint | " in log.read_text()

        server.send_signal(signal.SIGINT)  # Ctrl-C
        assert server.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        stop_command(server, serve_id)
    assert leftovers(serve_id) == []


def test_ctrl_c_during_training_leaves_nothing_behind(tiny_data, tmp_path):
    run_id = f"dogbreed-test-train-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "train.log"
    train = ["local", "train", "--image", TRAIN_IMAGE, "--hosts", "2", "--data", str(tiny_data)]
    train += ["--out", str(tmp_path / "out"), "--run-id", run_id, "--hp", "weights=none"]
    train += ["--hp", "epochs=200", "--hp", "batch-size=4"]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", *train],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_line(proc, log, "algo-2 | ", timeout=180)  # both containers are running
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
        assert time.monotonic() - start < 60
    finally:
        stop_command(proc, run_id)
    assert "interrupted" in log.read_text()
    assert leftovers(run_id) == []


def listening(port: int) -> set[str]:
    """Addresses with a socket listening on `port` in this machine's network namespace
    (read from /proc: no traffic)."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port and len(address) == width:
                found.add(address)
    return found


# 127.0.0.1, ::1, and ::ffff:127.0.0.1 (Java binds 127.0.0.1 on an IPv6 socket)
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_on_host_networking_everything_listens_on_loopback_only(tiny_data, tmp_path):
    tag = uuid.uuid4().hex[:8]
    out = tmp_path / "out"
    run_id = f"dogbreed-test-train-{tag}"
    log = tmp_path / "train.log"
    train = ["local", "train", "--image", TRAIN_IMAGE, "--hosts", "2", "--network", "host"]
    train += ["--data", str(tiny_data), "--out", str(out), "--run-id", run_id]
    train += [a for hp in HPS for a in ("--hp", hp)]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", *train],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_line(proc, log, "algo-2 | ", timeout=180)
        # The hosts' rendezvous store (port 29500 in their own namespace) is not here.
        assert listening(29500) == set()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        stop_command(proc, run_id)
    assert leftovers(run_id) == []

    serve_id = f"dogbreed-test-serve-{tag}"
    port = free_port()
    log = tmp_path / "serve.log"
    serve = ["local", "serve", "--image", SERVE_IMAGE, "--model", str(out / "model.tar.gz")]
    serve += ["--port", str(port), "--run-id", serve_id, "--network", "host", "--wait", "180"]
    with log.open("w") as fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", *serve],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_line(server, log, "endpoint: ", timeout=240)
        addresses = listening(port)
        assert addresses and addresses <= LOOPBACK, addresses
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        stop_command(server, serve_id)
    assert leftovers(serve_id) == []


def test_repeated_signals_during_clean_up_leave_nothing_behind(tiny_data, tmp_path):
    run_id = f"dogbreed-test-train-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "train.log"
    train = ["local", "train", "--image", TRAIN_IMAGE, "--hosts", "2", "--data", str(tiny_data)]
    train += ["--out", str(tmp_path / "out"), "--run-id", run_id, "--hp", "weights=none"]
    train += ["--hp", "epochs=200", "--hp", "batch-size=4"]
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", *train],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_for_line(proc, log, "algo-2 | ", timeout=180)
        proc.send_signal(signal.SIGINT)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            time.sleep(0.3)  # while the containers are being stopped
            proc.send_signal(signum)
        assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
    finally:
        stop_command(proc, run_id)
    assert leftovers(run_id) == []
