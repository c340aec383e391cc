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
So a `Supervisor` thread looks at the process tree twice a second:

- the front end gone -> the server stops with an error (exit 9);
- the parent gone -> it is started again with the command line, environment
  and folder the front end gave it, and the front end's next retry connects
  (at most `MAX_RESTARTS` times in `RESTART_WINDOW_S`);
- no worker able to answer for `DOGBREED_WORKER_TIMEOUT_S` -> the server stops
  with an error, so that the platform replaces the instance instead of routing
  requests to a /ping that lies.

`drain_then` is the other half: on SIGTERM, requests already taken finish before
the front end is told to stop (workers mark each request in a shared folder,
worker_load.py), bounded by `DOGBREED_DRAIN_S`, well inside SageMaker's 30 s.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from dogbreed.core.errors import ServerError
from dogbreed.serve.worker_load import busy_count

log = logging.getLogger("dogbreed.serve.server")

# How the three kinds of process are told apart (their command lines).
FRONT_END_MAIN = "com.amazonaws.ml.mms.ModelServer"
WORKER_SCRIPT = "model_service_worker.py"
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


def look(restarted: frozenset[int] = frozenset()) -> Tree:
    """The front end, the workers' parent (the front end's child, or one we restarted)
    and how many workers are alive (forked children, or orphans still serving)."""
    front_end = backend = None
    workers = 0
    found = [(p, _cmdline(p)) for p in psutil.Process().children(recursive=True)]
    for proc, cmd in found:
        if FRONT_END_MAIN in cmd:
            front_end = proc
    for proc, cmd in found:
        if WORKER_SCRIPT not in cmd:
            continue
        with contextlib.suppress(psutil.Error):
            ppid = proc.ppid()
            if proc.pid in restarted or (front_end is not None and ppid == front_end.pid):
                backend = proc
            else:
                workers += 1
    return Tree(front_end, backend, workers)


def find_front_end(timeout_s: float, poll_s: float = 0.1) -> psutil.Process:
    """The Java front end among our own descendants, once it has started.

    Stands in for the toolkit's search, which scans every process on the machine
    once a second: until it returns, SIGTERM cannot drain (see graceful_sigterm),
    and the front end may already be answering /ping by then.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        front_end = look().front_end
        if front_end is not None:
            return front_end
        time.sleep(poll_s)
    raise ServerError(f"the model server's front end did not start within {timeout_s:.0f} s")


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
    """The watch thread (see the module's docstring). `fatal` says why it gave up."""

    stopped: threading.Event
    worker_timeout_s: float
    poll_s: float = 0.5
    fatal: str | None = None
    spec: BackendSpec | None = None
    serving: bool = False  # a worker has answered since the start
    restarts: list[float] = field(default_factory=list)
    restarted: set[int] = field(default_factory=set)  # pids of the parents we started
    _down_since: float | None = None
    _up_since: float | None = None  # when the front end was first seen

    def start(self) -> threading.Thread:
        signal.signal(signal.SIGUSR1, self._on_fatal)
        thread = threading.Thread(target=self._run, name="model-server-watch", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while not self.stopped.wait(self.poll_s):
            reason = self.check(look(frozenset(self.restarted)), time.monotonic())
            if reason is not None:
                self._give_up(reason)
                return

    def check(self, tree: Tree, now: float) -> str | None:
        """One step: heal what can be healed; the reason to stop, or None."""
        if tree.front_end is None:
            if self._up_since is not None:
                return FRONT_END_GONE
            return None  # still starting: the toolkit's own start-up timeout applies
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
        if self.spec is None or len(self.restarts) >= MAX_RESTARTS or self.stopped.is_set():
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

    def _give_up(self, reason: str) -> None:
        """Wake the main thread (blocked in the toolkit) with SIGUSR1, until it is out.

        Sent to the main thread itself: it may sit in a blocking waitpid() on the
        front end, which only a signal delivered to that thread interrupts. One
        that lands while the toolkit is still looking for the front end is
        swallowed by its retry loop, so send again each second.
        """
        self.fatal = reason
        log.error(reason)
        main = threading.main_thread().ident
        while not self.stopped.is_set() and main is not None:
            signal.pthread_kill(main, signal.SIGUSR1)
            self.stopped.wait(1.0)

    def _on_fatal(self, signo, frame) -> None:
        if self.fatal and not self.stopped.is_set():  # not once cleanup began
            self.stopped.set()  # no further wake-up may land in the clean-up
            raise ServerError(self.fatal)


def drain_then(stop: Callable[[], None], inflight: Path, limit_s: float) -> threading.Thread:
    """Call `stop` once no request has been in a worker for QUIET_S (at most limit_s)."""

    def drain() -> None:
        deadline = time.monotonic() + limit_s
        quiet_since = time.monotonic()
        busy = 0
        while time.monotonic() < deadline:
            busy = busy_count(inflight) if inflight.is_dir() else 0
            now = time.monotonic()
            if busy:
                quiet_since = now
            elif now - quiet_since >= QUIET_S:
                break
            time.sleep(0.05)
        else:
            log.warning("stopping with %d requests still running after %.0f s", busy, limit_s)
        stop()

    thread = threading.Thread(target=drain, name="drain", daemon=True)
    thread.start()
    return thread


def graceful_sigterm(
    model_server, stopped: threading.Event, inflight: Path, limit_s: float
) -> None:
    """On SIGTERM, finish the requests already taken, then stop MMS as the toolkit does.

    The toolkit installs its own handler once it has found MMS (forward SIGTERM to
    it, then return as when MMS dies by itself). Ours takes its place in one step,
    so that no SIGTERM can reach the toolkit's and skip the drain: note the stop
    (so a clean exit is told from a crash), drain, then forward.
    """

    def add_draining_handler(mms_process) -> None:
        def forward() -> None:
            with contextlib.suppress(OSError):
                os.kill(mms_process.pid, signal.SIGTERM)

        def on_sigterm(signo, frame) -> None:
            if stopped.is_set():  # a second SIGTERM: stop now
                forward()
                return
            stopped.set()
            log.info("SIGTERM: finishing the requests already taken (at most %.0f s)", limit_s)
            drain_then(forward, inflight, limit_s)

        signal.signal(signal.SIGTERM, on_sigterm)

    model_server._add_sigterm_handler = add_draining_handler


def interrupt_stops(stopped: threading.Event) -> None:
    """Ctrl-C stops the front end too: not a failure."""

    def interrupted(signo, frame) -> None:
        stopped.set()
        signal.default_int_handler(signo, frame)

    signal.signal(signal.SIGINT, interrupted)
