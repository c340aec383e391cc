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
from dogbreed.local.docker_engine import Follower, Run
from dogbreed.serve.client import wait_until_healthy
from support.containers import SERVE_IMAGE, Started, engine, mount, run_detached

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


def wait_for_ping(url: str, proc: subprocess.Popen | ContainerServer, log: Path) -> float:
    """Seconds until GET /ping answered 200; fails if the server died or never came up."""
    try:
        return wait_until_healthy(url, START_TIMEOUT_S, alive=lambda: proc.poll() is None)
    except EndpointError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None


def stop(proc: subprocess.Popen | ContainerServer) -> None:
    """A native server goes with its session; a container is removed by id (`docker rm -f`)."""
    if isinstance(proc, ContainerServer):
        proc.remove()
    else:
        stop_server(proc, own_session=getattr(proc, "own_session", False))


def start_native(
    model_dir: Path, tmp: Path, *flags: str, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen, Path]:
    port = free_port()
    log = tmp / "server.log"
    env = {
        **os.environ,
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


class ContainerServer(Started):
    """The serve container: its log streamed into a file, removed by id with its own Run."""

    def __init__(self, run: Run, container, log: Path) -> None:
        super().__init__(container)
        self.run = run
        self._log = log.open("w")
        self._follower = Follower(self.container, "serve", out=self._log)
        self._follower.start()

    def remove(self) -> None:
        try:
            self.run.remove_all()
            self._follower.join(timeout=10)
        finally:
            self._log.close()


def start_container(model_dir: Path, tmp: Path) -> tuple[str, ContainerServer, Path]:
    """The serve image as SageMaker runs it: `docker run IMAGE serve`, model in /opt/ml/model."""
    port = free_port()
    model_dir.chmod(0o755)  # the image's non-root user reads it
    log = tmp / "server.log"
    name = f"dogbreed-test-serve-{port}"
    run = Run(engine(), name, "serve", stop_timeout=0)  # removal is `docker rm -f`
    try:
        container = run_detached(
            run,
            SERVE_IMAGE,
            ["serve"],
            name=name,
            network_mode="host",
            environment={
                "SAGEMAKER_BIND_TO_PORT": str(port),
                "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
            },
            volumes=mount(model_dir, "/opt/ml/model", read_only=True),
        ).container
    except BaseException:
        run.remove_all()
        raise
    return f"http://127.0.0.1:{port}", ContainerServer(run, container, log), log
