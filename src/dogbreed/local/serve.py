"""`dogbreed local serve`: the serve image on this machine, as a SageMaker endpoint runs it.

`docker run IMAGE serve` with the model read-only at /opt/ml/model (a
model.tar.gz is unpacked into a temporary directory first, every member
checked), SAGEMAKER_BIND_TO_PORT set, reachable at http://127.0.0.1:PORT and
nowhere else: a port published on 127.0.0.1 from the run's private bridge network,
or, where the engine has no bridge, host networking with the server told to listen
on 127.0.0.1 (the image's own default is 0.0.0.0, as SageMaker needs). Waits for
GET /ping, prints the URL, streams the log (`endpoint | ...`); Ctrl-C or SIGTERM
stops and removes the container.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dogbreed.core.errors import ConfigError, ModelError, ServerError
from dogbreed.core.modeldir import METADATA_FILE
from dogbreed.local import docker_engine as engine
from dogbreed.local.archive import extract_model

log = logging.getLogger("dogbreed.local")

CONTAINER_PORT = 8080  # SageMaker's port, inside the container's own network namespace
MMS_MAX_PORT = 32767  # multi-model-server refuses higher port numbers
STOP_TIMEOUT_S = 30  # SageMaker's grace between SIGTERM and SIGKILL for endpoints
LOOPBACK = "127.0.0.1"  # the only address a local endpoint is reachable on


@dataclass
class ServeJob:
    image: str
    model: Path
    port: int = 8080
    network: str = "auto"
    wait_s: float = 240.0  # SageMaker's default health-check window: 4 minutes
    env: dict[str, str] = field(default_factory=dict)
    run_id: str = ""


def model_dir(model: Path, scratch: Path) -> Path:
    """The directory to mount: `model` itself, or a .tar.gz unpacked safely under `scratch`."""
    if model.is_dir():
        found = model.resolve()
    elif model.is_file() and tarfile.is_tarfile(model):
        found = extract_model(model, scratch / "model")
    elif model.exists():
        raise ModelError(f"--model {model}: neither a model directory nor a model.tar.gz")
    else:
        raise ModelError(f"--model {model}: no such file or directory")
    if not (found / METADATA_FILE).is_file():
        raise ModelError(f"--model {model}: no {METADATA_FILE} (not a model written by training)")
    return found


@contextlib.contextmanager
def mounted_model(model: Path, image: str) -> Iterator[tuple[object, Path]]:
    """(Docker client, the model directory to mount read-only) for `image`; a model.tar.gz
    is unpacked into a scratch folder that goes at the end, whatever ends it."""
    scratch = Path(tempfile.mkdtemp(prefix="dogbreed-model-"))
    try:
        scratch.chmod(0o755)  # the serve image reads the model as its own user
        mount = model_dir(model, scratch)
        client = engine.connect()
        engine.require_image(client, image)
        yield client, mount
    finally:
        with engine.signals_held():  # a second Ctrl-C must not leave the unpacked model
            shutil.rmtree(scratch, ignore_errors=True)


def wait_for_ping(url: str, follower: engine.Follower, wait_s: float) -> None:
    """GET /ping until 200, the container exits, or wait_s passes (ServerError)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not follower.is_alive():
            follower.join(5)
            raise ServerError(
                f"the serve container exited with code {follower.exit_code} before "
                "answering /ping; see its log above"
            )
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ServerError(f"{url}/ping did not answer 200 within {wait_s:.0f} s")


def run_serve(job: ServeJob) -> int:
    """Serve until Ctrl-C/SIGTERM (KeyboardInterrupt) or the container stops (ServerError)."""
    if not 1 <= job.port <= 65535:
        raise ConfigError(f"--port {job.port}: must be 1-65535")
    if not engine.port_is_free(job.port):
        raise ConfigError(f"--port {job.port}: 127.0.0.1:{job.port} is in use")
    with mounted_model(job.model, job.image) as (client, mount):
        run_id = job.run_id or engine.new_run_id("serve")
        with engine.Run(client, run_id, "serve", STOP_TIMEOUT_S) as run:
            _serve(run, job, mount)
    return 0


def container_spec(job: ServeJob, network: str | None, mount: Path) -> tuple[list[str], dict]:
    """The serve container's command and create() options for the chosen network.

    Bridge network: the server listens on 8080 inside the container's own network
    namespace and only 127.0.0.1:PORT of this machine is published to it. Host
    networking: the container shares this machine's interfaces, and the image's
    entry point listens on 0.0.0.0 (what SageMaker needs); `--host 127.0.0.1` after
    it overrides that, so the endpoint is reachable from this machine only.
    """
    options: dict = {"volumes": {str(mount): {"bind": "/opt/ml/model", "mode": "ro"}}}
    if network:
        command = ["serve"]
        port_inside = CONTAINER_PORT
        options["ports"] = {f"{CONTAINER_PORT}/tcp": ("127.0.0.1", job.port)}
    else:
        if job.port > MMS_MAX_PORT:
            raise ConfigError(
                f"--port {job.port}: the model server takes ports up to {MMS_MAX_PORT} "
                "(host networking)"
            )
        command = ["serve", "--host", LOOPBACK]
        port_inside = job.port
    options["environment"] = {**job.env, "SAGEMAKER_BIND_TO_PORT": str(port_inside)}
    return command, options


def _serve(run: engine.Run, job: ServeJob, mount: Path) -> None:
    network = run.choose_network(job.network)
    command, options = container_spec(job, network, mount)
    if network is None:
        log.info("endpoint: host networking, listening on %s:%d only", LOOPBACK, job.port)
    container = run.create(job.image, command, "endpoint", network, **options)
    run.start(container)
    follower = engine.Follower(container, "endpoint")
    follower.start()
    url = f"http://{LOOPBACK}:{job.port}"
    wait_for_ping(url, follower, job.wait_s)
    print(f"endpoint: {url}  (GET /ping, POST /invocations; Ctrl-C stops it)", flush=True)
    while follower.is_alive():
        follower.join(0.5)
    raise ServerError(f"the serve container stopped on its own (exit code {follower.exit_code})")
