"""Keep the model server honest while it runs: watch it, heal it, drain it.

multi-model-server is three kinds of process, all below `dogbreed serve`:

    dogbreed serve (this process; a subreaper, so orphans come back to it)
      java ... com.amazonaws.ml.mms.ModelServer        the front end: HTTP, queue, /ping
        python mms/model_service_worker.py ...         the workers' parent (the "backend"):
          python mms/model_service_worker.py ...       forks one child per worker, which
          python mms/model_service_worker.py ...       loads the model and answers requests

The front end replaces a dead worker child (it reconnects and the parent forks
another), but it never restarts a dead parent: it retries the parent's socket
with growing back-off (1, 2, 3, 5 ... 89 s) for ever, every request fails, and
its `/ping` keeps answering 200. The OOM killer picks exactly that process.
So `serve`'s main loop looks at the process tree a few times a second and
`Supervisor.check` decides:

- the front end gone -> the server stops with an error (exit 9);
- the parent gone -> it is started again with the command line, environment
  and folder the front end gave it, and the front end's next retry connects
  (at most `MAX_RESTARTS` times in `RESTART_WINDOW_S`);
- no worker able to answer for `DOGBREED_WORKER_TIMEOUT_S` -> the server stops
  with an error, so that the platform replaces the instance instead of routing
  requests to a /ping that lies.

`drain` is the other half: on SIGTERM, requests already taken finish before
the front end is told to stop (workers flag each request, worker_load.py),
bounded by `DOGBREED_DRAIN_S`, well inside SageMaker's 30 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from dogbreed.serve.mms import WORKER_SCRIPT
from dogbreed.serve.worker_load import busy_count

log = logging.getLogger("dogbreed.serve.server")

MAX_RESTARTS = 3
# SageMaker's own allowance for the first /ping 200 after the container starts.
STARTUP_S = 240.0
RESTART_WINDOW_S = 600.0
# A request between the front end's queue and a worker is invisible: for microseconds,
# longer when the JVM pauses on a busy machine. "Idle" is no request in any worker for
# this long (well inside the 30 s SageMaker allows after SIGTERM).
QUIET_S = 1.0
FRONT_END_GONE = "the model server's front end (Java) exited on its own; its log above says why"


@dataclass(frozen=True)
class Tree:
    """One look at the processes below us (zombies count as gone)."""

    front_end: psutil.Process | None
    backend: psutil.Process | None
    workers: int


def _cmdline(proc: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        if proc.status() != psutil.STATUS_ZOMBIE:
            return " ".join(proc.cmdline())
    return ""


def _alive(proc: psutil.Process) -> bool:
    """Running, and not a zombie (exited, not yet reaped)."""
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def look(front_end: psutil.Process | None, restarted: frozenset[int] = frozenset()) -> Tree:
    """The workers' parent (the front end's child, or one we restarted) and how many
    workers are alive (forked children, or orphans still serving)."""
    if front_end is not None and not _alive(front_end):
        front_end = None
    backend = None
    workers = 0
    for proc in psutil.Process().children(recursive=True):
        if WORKER_SCRIPT not in _cmdline(proc):
            continue
        with contextlib.suppress(psutil.Error):
            if proc.pid in restarted or (front_end is not None and proc.ppid() == front_end.pid):
                backend = proc
            else:
                workers += 1
    return Tree(front_end, backend, workers)


def reap_orphans(keep: int) -> None:
    """Collect the exit status of our dead children other than `keep` (the front end, whose
    Popen does that): workers orphaned to us and parents we restarted."""
    for proc in psutil.Process().children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if proc.pid != keep and proc.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(proc.pid, os.WNOHANG)


@dataclass
class BackendSpec:
    """How the front end started the workers' parent: enough to start it again."""

    cmdline: list[str]
    environ: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, proc: psutil.Process) -> BackendSpec | None:
        try:
            return cls(proc.cmdline(), proc.environ(), proc.cwd())
        except psutil.Error:  # it went as we looked: the next look tries again
            return None

    def start(self) -> int:
        # Our child, not the front end's: its output goes to our log, and the
        # front end's next retry finds its socket.
        return subprocess.Popen(self.cmdline, env=self.environ, cwd=self.cwd).pid


@dataclass
class Supervisor:
    """The decisions of the watch (see the module's docstring), one look at a time."""

    worker_timeout_s: float
    stopping: bool = False  # set once the stop began: no more restarts
    spec: BackendSpec | None = None
    serving: bool = False  # a worker has answered since the start
    restarts: list[float] = field(default_factory=list)
    restarted: set[int] = field(default_factory=set)  # pids of the parents we started
    _down_since: float | None = None
    _up_since: float | None = None  # when the front end was first seen

    def check(self, tree: Tree, now: float) -> str | None:
        """One step: heal what can be healed; the reason to stop, or None."""
        if tree.front_end is None:
            if self._up_since is not None:
                return FRONT_END_GONE
            return None  # not started yet
        if self._up_since is None:
            self._up_since = now
        if tree.backend is not None and self.spec is None:
            self.spec = BackendSpec.of(tree.backend)
        if tree.backend is None and self.spec is not None:
            self._restart_backend(now)  # orphaned workers may still serve; the next one won't
        if tree.workers > 0:
            self.serving, self._down_since = True, None
            return None
        if not self.serving:  # loading the model: SageMaker allows minutes for the first /ping
            if now - self._up_since > STARTUP_S:
                return f"no model worker came up within {STARTUP_S:.0f} s of the start"
            return None
        if self._down_since is None:
            self._down_since = now
            log.warning("no model worker is running; waiting up to %.0f s", self.worker_timeout_s)
        if now - self._down_since > self.worker_timeout_s:
            return (
                f"no model worker could answer for {self.worker_timeout_s:.0f} s; stopping so that "
                "the platform replaces this server (DOGBREED_WORKER_TIMEOUT_S sets the wait)"
            )
        return None

    def _restart_backend(self, now: float) -> None:
        self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S]
        if self.spec is None or len(self.restarts) >= MAX_RESTARTS or self.stopping:
            return
        self.restarts.append(now)
        pid = self.spec.start()
        self.restarted.add(pid)
        log.warning(
            "the model workers' parent process died; started it again (pid %d, restart %d of %d)",
            pid,
            len(self.restarts),
            MAX_RESTARTS,
        )


def drain(inflight: Path, limit_s: float, hurry: Callable[[], bool] = lambda: False) -> int:
    """Return once no request has been in a worker for QUIET_S, at most limit_s (or as soon
    as `hurry()`); how many requests were still running."""
    deadline = time.monotonic() + limit_s
    quiet_since = time.monotonic()
    busy = 0
    while time.monotonic() < deadline and not hurry():
        busy = busy_count(inflight) if inflight.is_dir() else 0
        now = time.monotonic()
        if busy:
            quiet_since = now
        elif now - quiet_since >= QUIET_S:
            return 0
        time.sleep(0.05)
    return busy
