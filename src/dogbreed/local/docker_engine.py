"""The Docker engine through the Docker SDK for Python: the one place Docker is driven.

A `Run` owns what one `dogbreed local` command starts: at most one network named
for the run and containers labelled `dogbreed.local=<run id>`. Leaving it (normal
end, error, Ctrl-C) stops and removes each of them by id, and nothing else.

Networks: a private user-defined bridge network where the engine allows one
(containers reach each other by their host names, algo-1 ... algo-N); host
networking where it does not (the project's own engine may run with
`--bridge=none --iptables=false`): host names then resolve to 127.0.0.1, and
whatever listens is kept to loopback (local/serve.py, local/train.py say how).
`docker` is imported inside functions so that `dogbreed --help` stays light.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from dogbreed.core.errors import ConfigError, DogbreedError

log = logging.getLogger("dogbreed.local")

RUN_LABEL = "dogbreed.local"  # the run id: `docker ps -a --filter label=dogbreed.local=ID`
ROLE_LABEL = "dogbreed.local.role"  # train | serve
HOST_LABEL = "dogbreed.local.host"  # algo-1 ...
NETWORK_MODES = ("auto", "bridge", "host")
# Docker's "none" network: a namespace with loopback alone. Several containers can share
# one (`join`): they reach each other on 127.0.0.1 and nothing else reaches them.
LOOPBACK_ONLY = "none"
_RUN_ID = re.compile(r"[a-z0-9][a-z0-9_.-]{0,47}")
_out_lock = threading.Lock()


class EngineError(DogbreedError):
    """No Docker engine answers, or it refused a request."""


class HostFailedError(DogbreedError):
    """A container of the run ended with a non-zero exit code."""


def new_run_id(role: str) -> str:
    return f"dogbreed-{role}-{secrets.token_hex(4)}"


def check_run_id(text: str) -> str:
    if not _RUN_ID.fullmatch(text):
        raise ConfigError(f"--run-id {text!r}: use 1-48 lowercase letters, digits, '.', '_' or '-'")
    return text


def connect():
    """A client of the engine DOCKER_HOST (or the default socket) names; EngineError if none
    answers."""
    try:
        import docker
    except ImportError:
        raise EngineError(
            "the Docker SDK for Python is not installed (pip install 'dogbreed[train]')"
        ) from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as exc:
        raise EngineError(
            f"no Docker engine answers ({_short(exc)}); start one (make engine) "
            "or point DOCKER_HOST at its socket"
        ) from None
    return client


def require_image(client, image: str) -> None:
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ConfigError(
            f"image {image} not found on this engine (build it: make build)"
        ) from None
    except docker.errors.APIError as exc:
        raise EngineError(f"cannot inspect image {image}: {_short(exc)}") from None


def free_port() -> int:
    """A port no one listens on at 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _short(exc: BaseException) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return " ".join(str(text).split())[:300]


class Follower(threading.Thread):
    """Streams one container's log as `PREFIX | line` and then reads its exit code."""

    def __init__(self, container, prefix: str, out=None) -> None:
        super().__init__(name=f"log-{prefix}", daemon=True)
        self.container, self.prefix = container, prefix
        self.out = out
        self.exit_code: int | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=20)

    def run(self) -> None:
        pending = b""
        try:
            for chunk in self.container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._emit(line)
            if pending:
                self._emit(pending)
            self.exit_code = int(self.container.wait().get("StatusCode", 1))
        except Exception as exc:  # the container was removed under us: the run is ending
            log.debug("%s: log stream ended: %s", self.prefix, exc)
            if self.exit_code is None:
                self.exit_code = -1

    def _emit(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip("\r")
        self.tail.append(line)
        with _out_lock:
            print(f"{self.prefix} | {line}", file=self.out or sys.stdout, flush=True)


class Run:
    """What one command started on the engine; `with Run(...)` removes all of it by id."""

    def __init__(self, client, run_id: str, role: str, stop_timeout: float = 10) -> None:
        self.client, self.run_id, self.role = client, run_id, role
        self.stop_timeout = stop_timeout
        self.containers: list[Any] = []
        self.network = None

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id, ROLE_LABEL: self.role}

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A second Ctrl-C or SIGTERM must not leave containers behind: finish removing
        # first, then act on it (unless the run is already ending with an error).
        with signals_held() as received:
            self.remove_all()
        if received and exc_type is None:
            raise KeyboardInterrupt

    def choose_network(self, mode: str) -> str | None:
        """The run's private bridge network's name, or None for host networking.

        auto: try to create the network and fall back to host networking if the
        engine refuses; the decision is logged in one line.
        """
        import docker

        if mode not in NETWORK_MODES:
            raise ConfigError(f"--network {mode!r}: one of {', '.join(NETWORK_MODES)}")
        if mode == "host":
            log.info("network: host networking (asked for); hosts resolve to 127.0.0.1")
            return None
        try:
            self.network = self.client.networks.create(
                self.run_id, driver="bridge", labels=self.labels, check_duplicate=True
            )
        except docker.errors.APIError as exc:
            if mode == "bridge":
                raise EngineError(f"the engine refuses a bridge network: {_short(exc)}") from None
            log.info(
                "network: the engine refuses a bridge network (%s); host networking, "
                "hosts resolve to 127.0.0.1",
                _short(exc),
            )
            return None
        log.info("network: private bridge network %s", self.run_id)
        return self.run_id

    def create(
        self, image: str, command: list[str], host: str, network: str | None, join=None, **kw
    ):
        """Create (not start) a labelled container named `<run id>-<host>`.

        network: the run's bridge network, None for host networking, or LOOPBACK_ONLY
        for a network namespace of its own that has loopback alone. join: a container
        of the run whose network namespace (and /etc/hosts) this one shares instead.
        """
        import docker

        options: dict[str, Any] = {
            "name": f"{self.run_id}-{host}",
            "labels": {**self.labels, HOST_LABEL: host},
            **kw,
        }
        if join is not None:
            options["network_mode"] = f"container:{join.id}"
        elif network == LOOPBACK_ONLY:
            options["network_mode"] = "none"
        elif network:
            endpoint = self.client.api.create_endpoint_config(aliases=[host])
            options.update(network=network, networking_config={network: endpoint}, hostname=host)
        else:
            options["network_mode"] = "host"
        try:
            container = self.client.containers.create(image, command, **options)
        except docker.errors.APIError as exc:
            raise EngineError(f"cannot create the {host} container: {_short(exc)}") from None
        self.containers.append(container)
        return container

    def start(self, container) -> None:
        import docker

        try:
            container.start()
        except docker.errors.APIError as exc:
            name = container.labels.get(HOST_LABEL, container.name)
            raise EngineError(f"cannot start the {name} container: {_short(exc)}") from None

    def stop(self, containers: Iterable, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL after `timeout` seconds; all at once, each by id."""
        threads = [
            threading.Thread(target=_stop_one, args=(c, timeout or self.stop_timeout), daemon=True)
            for c in containers
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join((timeout or self.stop_timeout) + 60)

    def remove_all(self) -> None:
        import docker

        self.stop(self.containers)
        for container in reversed(self.containers):  # those sharing a namespace go first
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
            except Exception as exc:  # one failure must not keep the others
                log.warning("could not remove container %s: %s", container.id[:12], _short(exc))
        if self.network is not None:
            try:
                self.network.remove()
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                log.warning("could not remove network %s: %s", self.run_id, _short(exc))
        self.containers, self.network = [], None


@contextlib.contextmanager
def signals_held() -> Iterator[list[int]]:
    """While the block runs, SIGINT and SIGTERM are noted (the list it gives) instead of
    interrupting it: clean-up that a second Ctrl-C cut short would leave containers
    running. Handlers are restored after; outside the main thread this does nothing
    (Python runs handlers there only)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def note(signum, frame) -> None:
        received.append(signum)
        log.warning("%s: still removing the run's containers", signal.Signals(signum).name)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_one(container, timeout: float) -> None:
    try:
        container.reload()
        if container.status in ("running", "restarting", "paused"):
            container.stop(timeout=int(timeout))
    except Exception as exc:  # gone already, or the engine is shutting down
        log.debug("stop %s: %s", container.id[:12], exc)
