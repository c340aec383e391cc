"""Start multi-model-server through the sagemaker-inference toolkit.

`dogbreed serve` and the serve image's `serve` both come here. The model
directory is checked before the server starts (a bad one fails in one line),
and the toolkit's settings get defaults that suit this model:

    SAGEMAKER_BIND_TO_PORT                 port (8080)
    SAGEMAKER_MODEL_SERVER_WORKERS         worker processes (2)
    SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS response timeout in seconds (60); the
                                           toolkit's older *_TIMEOUT is in minutes
    DOGBREED_MAX_PAYLOAD_MB                request size limit, JSON 413 above it (6)
    DOGBREED_ORT_THREADS                   ONNX Runtime threads per worker (cores)
    DOGBREED_SHARE_CORES                   1: cores / workers threads while the other
                                           workers are busy too (worker_load.py)
    DOGBREED_PRECISION                     auto|fp32|int8: which model file to run (auto:
                                           int8 where there is one and the CPU has
                                           int8 dot products)
    DOGBREED_WORKER_TIMEOUT_S              no worker able to answer this long: exit 9 (20)
    DOGBREED_DRAIN_S                       SIGTERM: let taken requests finish this long (20)
    SAGEMAKER_MODEL_SERVER_VMARGS          JVM flags (a small heap by default)
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError, ServerError
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.supervisor import (
    FRONT_END_GONE,
    Supervisor,
    find_front_end,
    graceful_sigterm,
    interrupt_stops,
)

log = logging.getLogger(__name__)
HANDLER_SERVICE = "dogbreed.serve.handler_service"
# The toolkit's variables that we give a default (the rest keep the toolkit's own).
SERVER_DEFAULTS = (
    settings.BIND_TO_PORT,
    settings.MODEL_SERVER_WORKERS,
    settings.MODEL_SERVER_TIMEOUT_SECONDS,
    settings.MODEL_SERVER_VMARGS,
)


def server_environment(
    model_dir: Path,
    port: int | None,
    workers: int | None,
    env: dict[str, str],
    precision: str | None = None,
) -> dict[str, str]:
    """The variables the toolkit and MMS read, defaults filled in, flags on top."""
    out = dict(env)
    for key in SERVER_DEFAULTS:
        out[key] = settings.env_str(key, out)  # type: ignore[assignment]
    if port is not None:
        out[settings.BIND_TO_PORT] = str(port)
    if workers is not None:
        out[settings.MODEL_SERVER_WORKERS] = str(workers)
    if precision is not None:
        out[settings.PRECISION] = precision
    # MMS's own cap sits just above ours so that our handler answers a JSON 413,
    # and no higher: the front end buffers whole bodies (see DEFAULT_VMARGS).
    payload_mb = settings.env_float(settings.MAX_PAYLOAD_MB, out)
    out.setdefault("SAGEMAKER_MAX_PAYLOAD_IN_MB", str(math.ceil(payload_mb) + 1))
    # The toolkit serves BASE/model: point BASE at the model's parent, or a link.
    if model_dir.name == "model":
        out["SAGEMAKER_BASE_DIR"] = str(model_dir.parent)
    else:
        base = Path(tempfile.mkdtemp(prefix="dogbreed-serve-"))
        (base / "model").symlink_to(model_dir)
        out["SAGEMAKER_BASE_DIR"] = str(base)
    logs = Path(out.get("LOG_LOCATION") or tempfile.mkdtemp(prefix="dogbreed-mms-logs-"))
    out.setdefault("LOG_LOCATION", str(logs))
    out.setdefault("METRICS_LOCATION", str(logs))
    # Workers run `python` and the toolkit runs `multi-model-server` from PATH: ours.
    bindir = str(Path(sys.executable).parent)
    out["PATH"] = bindir + os.pathsep + out.get("PATH", "")
    return out


def become_subreaper() -> bool:
    """Adopt our descendants' orphans (Linux prctl PR_SET_CHILD_SUBREAPER).

    MMS runs detached from the toolkit, and a worker it spawns as it goes down
    outlives it; as a subreaper this process inherits such orphans and can
    stop them (stop_descendants) instead of leaving them to init.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # 36: PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def stop_descendants(grace_s: float = 10, rounds: int = 5) -> int:
    """SIGTERM every process below this one, SIGKILL what outlives grace_s; how many.

    Several rounds, because a dying server may spawn one more worker.
    """
    import psutil

    stopped = 0
    for _ in range(rounds):
        procs = psutil.Process().children(recursive=True)
        if not procs:
            break
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=grace_s)
        stopped += len(procs)
    return stopped


def _exit_on_signal(signo: int, frame) -> None:
    raise SystemExit(128 + signo)


# multi-model-server refuses port numbers above 32767 ("Invalid port number") and
# the toolkit then returns as if all went well: check first.
MAX_PORT = 32767


def check_port(port: int) -> None:
    """The port must be one MMS accepts and nobody listens on (all interfaces, as MMS binds)."""
    if not 1 <= port <= MAX_PORT:
        raise ConfigError(
            f"port {port}: the model server takes ports 1-{MAX_PORT} "
            f"(multi-model-server refuses higher numbers); set --port or {settings.BIND_TO_PORT}"
        )
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(f"port {port} cannot be used: {exc.strerror}") from None


def close_control_plane(model_server, inference_address: str) -> Path:
    """Serve inference alone on the public address; management on a private unix socket;
    bound the front end's queue (DOGBREED_JOB_QUEUE).

    The toolkit writes the same address for both, so MMS would answer its
    management API (register a model from any URL and run its handler, scale
    workers to zero, unregister) on the inference port. The toolkit appends its
    settings to the config file it writes; the properties appended here come
    last and win. The socket's folder is ours alone (mode 0700).
    """
    private = Path(tempfile.mkdtemp(prefix="dogbreed-mms-"))
    socket_path = private / "management.sock"
    generate = model_server._generate_mms_config_properties

    def generate_closed(env, handler_service=None) -> str:
        config = generate(env, handler_service)
        queue = settings.env_int(settings.JOB_QUEUE, minimum=1)
        return (
            config.rstrip("\n")
            + f"\ninference_address={inference_address}"
            + f"\nmanagement_address=unix:{socket_path}\n"
            + f"job_queue_size={queue}\n"
        )

    model_server._generate_mms_config_properties = generate_closed
    return socket_path


def check_model_dir(model_dir: Path, precision: str | None = None) -> Predictor:
    """Fail before starting anything when the model cannot be served."""
    return Predictor(model_dir, threads=1, precision=precision)


@dataclass(frozen=True)
class ServeOptions:
    """What `dogbreed serve` takes besides the model directory (None: the environment's)."""

    port: int | None = None
    workers: int | None = None
    precision: str | None = None
    # Natively only this machine reaches the server; SageMaker needs every interface.
    host: str = "127.0.0.1"
    handler_service: str = HANDLER_SERVICE


def serve(model_dir: Path, options: ServeOptions | None = None) -> None:
    """Run the model server in the foreground until it stops (SIGTERM stops it)."""
    opts = options or ServeOptions()
    model_dir = model_dir.resolve()
    model_precision = check_model_dir(model_dir, opts.precision).precision
    env = server_environment(model_dir, opts.port, opts.workers, dict(os.environ), opts.precision)
    os.environ.update(env)
    port = settings.env_int(settings.BIND_TO_PORT)
    check_port(port)
    settings.check_serve_env()
    if shutil.which("java") is None:
        raise ConfigError(
            "the model server needs Java 17+: install a JRE (e.g. "
            "openjdk-17-jre-headless) or use the serve image"
        )
    # Imported only now: the toolkit reads its settings at import time.
    from sagemaker_inference import model_server

    log.info(
        "serving %s (%s) on port %d of %s with %s workers",
        model_dir,
        model_precision,
        port,
        opts.host,
        os.environ[settings.MODEL_SERVER_WORKERS],
    )
    management = close_control_plane(model_server, f"http://{opts.host}:{port}")
    inflight = management.parent / "inflight"  # the workers' request flags (worker_load.py)
    os.environ[settings.INFLIGHT_DIR] = str(inflight)
    become_subreaper()
    # Until the toolkit installs its own handler (forward to MMS, then return),
    # SIGTERM unwinds through the cleanup below instead of killing us outright.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # The drain takes over SIGTERM once the toolkit has found MMS: let it look among our
    # own processes ten times a second, not the whole machine's once a second.
    model_server._retry_retrieve_mms_server_process = find_front_end
    stopped = threading.Event()  # set by SIGTERM, Ctrl-C or cleanup: the stop is ours
    graceful_sigterm(model_server, stopped, inflight, settings.env_float(settings.DRAIN_S))
    interrupt_stops(stopped)
    watch = Supervisor(stopped, settings.env_float(settings.WORKER_TIMEOUT_S, minimum=1))
    watch.start()
    try:
        try:
            model_server.start_model_server(handler_service=opts.handler_service)
        except ServerError:
            raise
        except Exception as exc:  # the toolkit raises bare Exceptions when MMS will not start
            raise ServerError(f"the model server did not start: {exc}") from None
        if not stopped.is_set():  # a supervisor must not read this as a clean stop
            # The toolkit waits on the Java front end, so returning by itself means
            # Java is gone; the watch thread may not have looked yet (it polls).
            stopped.set()  # ends the watch before its wake-up signal can land in the clean-up
            raise ServerError(watch.fatal or FRONT_END_GONE)
    finally:
        # Stopped (SIGTERM), interrupted (Ctrl-C) or failed: end the watch, leave no worker behind.
        stopped.set()
        leftovers = stop_descendants()
        if leftovers:
            log.info("stopped %d leftover model server processes", leftovers)
        shutil.rmtree(management.parent, ignore_errors=True)
