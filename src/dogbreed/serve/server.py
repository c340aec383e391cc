"""`dogbreed serve`: multi-model-server as our child, watched until it stops.

    check the model and the port   (a bad one fails in one line, before anything starts)
    start Java in a private folder (mms.py: config rendered from ServeSettings)
    watch it a few times a second  (supervisor.py: heal the workers, or exit 9)
    on SIGTERM, drain, then stop   (exit 0; a second SIGTERM stops at once)

Every process below us is stopped and the folder removed however it ends:
SIGTERM, Ctrl-C, a dead front end or a failed start.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import psutil

from dogbreed.core.errors import ConfigError, ServerError
from dogbreed.core.hardware import memory_limit_bytes
from dogbreed.core.serve_settings import ServeSettings
from dogbreed.core.settings import BIND_TO_PORT
from dogbreed.serve import mms
from dogbreed.serve.predictor import Predictor
from dogbreed.serve.supervisor import FRONT_END_GONE, Supervisor, drain, look, reap_orphans

log = logging.getLogger(__name__)
POLL_S = 0.1
# Java's own shutdown (it stops its workers) before what is left is stopped for it.
FRONT_END_STOP_S = 10.0
# multi-model-server refuses port numbers above 32767 ("Invalid port number").
MAX_PORT = 32767
# Workers by memory (fit_workers): measured on ResNet-18/50 in fp32 and int8.
DEFAULT_WORKERS = 2
MB = 1024 * 1024
WORKER_BASE_BYTES = 110 * MB  # Python, numpy, Pillow, ONNX Runtime, before any model
SESSION_FACTOR = 2.5  # a session's resident size / its model file (weights, plans, arena)
REQUEST_PEAK_BYTES = 250 * MB  # the most a request may take above idle (decode bounds)
FRONT_END_BYTES = 300 * MB  # Java with a full queue of maximum-size bodies, typically


def check_port(port: int) -> None:
    """The port must be one MMS accepts and nobody listens on (all interfaces, as MMS binds)."""
    if not 1 <= port <= MAX_PORT:
        raise ConfigError(
            f"port {port}: the model server takes ports 1-{MAX_PORT} "
            f"(multi-model-server refuses higher numbers); set --port or {BIND_TO_PORT}"
        )
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("0.0.0.0", port))
        except OSError as exc:
            raise ConfigError(f"port {port} cannot be used: {exc.strerror}") from None


def check_model_dir(model_dir: Path, opts: ServeSettings) -> Predictor:
    """Fail before starting anything when the model cannot be served."""
    return Predictor(model_dir, threads=1, precision=opts.precision)


def fit_workers(model_bytes: int, opts: ServeSettings, memory: int | None = None) -> int:
    """DEFAULT_WORKERS, or fewer where the memory limit cannot hold them at their worst.

    A worker budgets its Python stack, its ONNX Runtime sessions (two when it
    shares the cores, each about SESSION_FACTOR x the model file) and the largest
    request the limits allow (REQUEST_PEAK_BYTES above idle); the Java front end
    FRONT_END_BYTES. At least one worker, whatever the limit.
    """
    memory = memory_limit_bytes() if memory is None else memory
    sessions = 2 if opts.share_cores else 1
    worker = WORKER_BASE_BYTES + sessions * SESSION_FACTOR * model_bytes + REQUEST_PEAK_BYTES
    return max(1, min(DEFAULT_WORKERS, int((memory - FRONT_END_BYTES) // worker)))


def become_subreaper() -> bool:
    """Adopt our descendants' orphans (Linux prctl PR_SET_CHILD_SUBREAPER).

    A worker outlives its dead parent, and MMS spawns one more as it goes down;
    as a subreaper this process inherits such orphans and stops them
    (stop_descendants) instead of leaving them to init.
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


class StopRequests:
    """SIGTERM asks for a stop after the drain; a second one for a stop now.

    The handler only counts: the main loop acts on it. Installed before Java
    starts, so that no SIGTERM is ever lost or skips the drain.
    """

    def __init__(self) -> None:
        self.count = 0
        self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signo, frame) -> None:
        self.count += 1

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def watch(front_end: subprocess.Popen, opts: ServeSettings, runtime: mms.Runtime,
          stops: StopRequests) -> None:  # fmt: skip
    """Until SIGTERM (then drain and return) or a fault (ServerError)."""
    java = psutil.Process(front_end.pid)
    supervisor = Supervisor(opts.worker_timeout_s)
    while not stops.count:
        if front_end.poll() is not None:
            raise ServerError(FRONT_END_GONE)
        reason = supervisor.check(look(java, frozenset(supervisor.restarted)), time.monotonic())
        if reason is not None:
            raise ServerError(reason)
        reap_orphans(keep=front_end.pid)
        time.sleep(POLL_S)
    supervisor.stopping = True
    log.info("SIGTERM: finishing the requests already taken (at most %.0f s)", opts.drain_s)
    left = drain(runtime.inflight, opts.drain_s, hurry=lambda: stops.count > 1)
    if left:
        log.warning("stopping with %d requests still running after %.0f s", left, opts.drain_s)


def stop_front_end(front_end: subprocess.Popen) -> None:
    if front_end.poll() is None:
        front_end.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            front_end.wait(FRONT_END_STOP_S)


def serve(
    model_dir: Path, opts: ServeSettings, quiet: bool = False, handler: str = mms.HANDLER_SERVICE
) -> None:
    """Run the model server in the foreground until SIGTERM (returns) or a fault (raises).

    `handler`: the module MMS's workers run (the benchmark's reference serves another).
    """
    model_dir = model_dir.resolve()
    predictor = check_model_dir(model_dir, opts)
    check_port(opts.port)
    if opts.workers is None:
        opts = replace(opts, workers=fit_workers(predictor.model_path.stat().st_size, opts))
    stops = StopRequests()
    runtime = mms.Runtime.create()
    front_end = None
    try:
        become_subreaper()
        front_end = mms.start(opts, runtime, model_dir, quiet, handler)
        log.info(
            "serving %s (%s) on port %d of %s with %d workers",
            model_dir,
            predictor.precision,
            opts.port,
            opts.host,
            opts.workers,
        )
        watch(front_end, opts, runtime, stops)
    finally:
        # Stopped, interrupted (Ctrl-C) or failed: leave no process and no file behind,
        # and let no second Ctrl-C cut that short (SIGTERMs are only counted by now).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if front_end is not None:
            stop_front_end(front_end)
        leftovers = stop_descendants()
        if leftovers:
            log.info("stopped %d leftover model server processes", leftovers)
        runtime.remove()
        stops.restore()
        signal.signal(signal.SIGINT, signal.default_int_handler)
