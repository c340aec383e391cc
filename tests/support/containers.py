"""Test helpers: the images on the Docker engine, and SageMaker's /opt/ml tree.

Docker is driven as `dogbreed local` drives it, through dogbreed.local.docker_engine
(the Docker SDK for Python): every container a test starts belongs to a `Run`,
carries its labels, and is removed by id when the run is left.
"""

from __future__ import annotations

import functools
import os
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import requests

from dogbreed.core.errors import DogbreedError
from dogbreed.local.docker_engine import Run, connect, require_image

TRAIN_IMAGE = os.environ.get("TRAIN_IMAGE", "dogbreed-train") + ":latest"
SERVE_IMAGE = os.environ.get("SERVE_IMAGE", "dogbreed-serve") + ":latest"


@functools.cache
def engine():
    """One Docker SDK client for the test session (EngineError if no engine answers)."""
    return connect()


def image_present(image: str) -> bool:
    try:
        require_image(engine(), image)
    except DogbreedError:  # no SDK, no engine, or no such image
        return False
    return True


def labelled_run(role: str = "test") -> Run:
    """A Run of its own for what a test starts; leaving it removes each container by id.

    stop_timeout=0: removal is `docker rm -f` (SIGKILL), as the tests always did.
    """
    return Run(engine(), f"dogbreed-test-{uuid.uuid4().hex[:8]}", role, stop_timeout=0)


class Started:
    """A started container, read as a test reads a `docker run` in the foreground."""

    def __init__(self, container) -> None:
        self.container = container
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the container has ended, else None."""
        if self.returncode is None:
            self.container.reload()
            if self.container.status in ("exited", "dead"):
                self.wait(timeout=30)
        return self.returncode

    def wait(self, timeout: float) -> int:
        """The exit code; TimeoutError if the container runs past `timeout` seconds."""
        if self.returncode is None:
            try:
                status = self.container.wait(timeout=timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                raise TimeoutError(
                    f"container {self.container.name} still running after {timeout:.0f} s"
                ) from None
            self.returncode = int(status["StatusCode"])
        return self.returncode

    @property
    def output(self) -> str:
        """stdout and stderr as the terminal showed them, interleaved."""
        return self.logs()

    def logs(self, *, stdout: bool = True, stderr: bool = True) -> str:
        raw = self.container.logs(stdout=stdout, stderr=stderr)
        return raw.decode("utf-8", errors="replace")


def run_detached(
    run: Run,
    image: str,
    command: list[str],
    *,
    name: str | None = None,
    network_mode: str | None = "host",
    **options,
) -> Started:
    """`docker run -d`: create a container labelled with `run`'s labels (so removed by id
    with it), then start it. network_mode=None: the engine's default network."""
    import docker

    name = name or f"{run.run_id}-{len(run.containers) + 1}"
    try:
        container = run.client.containers.create(
            image, command, name=name, labels=run.labels, network_mode=network_mode, **options
        )
    except docker.errors.APIError as exc:
        raise AssertionError(f"cannot create container {name}: {exc}") from None
    run.containers.append(container)
    run.start(container)
    return Started(container)


class Finished(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_once(
    image: str, command: list[str], *, timeout: float = 600, check: bool = True, **options
) -> Finished:
    """`docker run --rm IMAGE COMMAND` to its end; AssertionError on a non-zero exit
    unless check=False. Options as `run_detached` takes them (network_mode defaults to host)."""
    with labelled_run() as run:
        job = run_detached(run, image, command, **options)
        code = job.wait(timeout)
        done = Finished(code, job.logs(stderr=False), job.logs(stdout=False))
    if check and code != 0:
        shown = " ".join(command[:3])
        raise AssertionError(f"{image} {shown} exited {code}: {done.stderr[-2000:]}")
    return done


def mount(source: Path, target: str, read_only: bool = False) -> dict[str, dict[str, str]]:
    """`-v SOURCE:TARGET[:ro]` as the SDK's `volumes` takes it."""
    return {str(source): {"bind": target, "mode": "ro" if read_only else "rw"}}


def remove_image(*refs: str, check: bool = True) -> None:
    """`docker rmi REF...`; check=False ignores what is not there."""
    import docker

    for ref in refs:
        try:
            engine().images.remove(ref)
        except docker.errors.APIError:
            if check:
                raise


def opt_ml(
    base: Path,
    data: Path,
    hyperparameters: dict,
    host: str = "algo-1",
    hosts: tuple[str, ...] = ("algo-1",),
    interface: str = "lo",
) -> Path:
    """A /opt/ml tree as SageMaker mounts it, with a copy of `data` as the training channel."""
    import json

    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": host, "hosts": list(hosts), "network_interface_name": interface}
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {"training": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}}
        )
    )
    shutil.copytree(data, base / "input" / "data" / "training")
    for sub in ("model", "output", "checkpoints"):
        (base / sub).mkdir()
    return base


def add_hosts(*names: str) -> dict[str, str]:
    """`--add-host NAME:127.0.0.1` for each name, as the SDK's `extra_hosts` takes them:
    SageMaker-style host names resolve to loopback."""
    return dict.fromkeys(names, "127.0.0.1")
