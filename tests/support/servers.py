"""Starting and stopping model servers for tests: natively or as the serve container."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

from dogbreed.core.errors import EndpointError
from dogbreed.serve.client import wait_until_healthy
from support.containers import SERVE_IMAGE

START_TIMEOUT_S = 180


def free_port(low: int = 20000, high: int = 32000) -> int:
    """A free loopback port. MMS refuses port numbers above 32767, so stay below."""
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port in {low}-{high}")


def stop_server(proc: subprocess.Popen, own_session: bool = True, timeout: float = 30) -> None:
    """Stop a server started as a child: SIGTERM (the toolkit forwards it to MMS), then kill.

    `serve` stops its own leftovers (stop_descendants); for a server started in
    a session of its own (start_new_session=True), killing the session is the
    backstop should it have been killed outright.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if own_session:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for_ping(url: str, proc: subprocess.Popen, log: Path) -> float:
    """Seconds until GET /ping answered 200; fails if the server died or never came up."""
    try:
        return wait_until_healthy(url, START_TIMEOUT_S, alive=lambda: proc.poll() is None)
    except EndpointError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None


def stop(proc: subprocess.Popen) -> None:
    """A native server goes with its session; a container's `docker run` by itself."""
    stop_server(proc, own_session=getattr(proc, "own_session", False))


def start_native(
    model_dir: Path, tmp: Path, *flags: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen, Path]:
    port = free_port()
    log = tmp / "server.log"
    env = {
        **os.environ,
        "LOG_LOCATION": str(tmp),
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        **(env or {}),
    }
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dogbreed",
                "serve",
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
                *flags,
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
            start_new_session=True,
        )
    proc.own_session = True
    return f"http://127.0.0.1:{port}", proc, log


def start_container(model_dir: Path, tmp: Path) -> tuple[str, subprocess.Popen, Path]:
    """The serve image as SageMaker runs it: `docker run IMAGE serve`, model in /opt/ml/model."""
    port = free_port()
    model_dir.chmod(0o755)  # the image's non-root user reads it
    log = tmp / "server.log"
    name = f"dogbreed-test-serve-{port}"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [
                "docker",
                "run",
                "--rm",
                "--name",
                name,
                "--network",
                "host",
                f"--env=SAGEMAKER_BIND_TO_PORT={port}",
                "--env=SAGEMAKER_MODEL_SERVER_WORKERS=2",
                "-v",
                f"{model_dir}:/opt/ml/model:ro",
                SERVE_IMAGE,
                "serve",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    proc.container = name
    return f"http://127.0.0.1:{port}", proc, log
