"""Client load for fault tests: a few threads posting one image until told to stop."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass(frozen=True)
class Answer:
    sent: float  # time.monotonic() when the request went out
    done: float
    status: int | str  # HTTP status, or the client error's class name


@dataclass
class Load:
    """`clients` threads, each posting `image` in a loop (at most `limit_s` seconds)."""

    url: str
    image: bytes
    clients: int = 3
    limit_s: float = 120
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._client, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop_sending(self) -> None:
        """No new request from now on (the ones in flight go on)."""
        self._stop.set()

    def stop(self) -> None:
        """No new request from now on; wait for the ones in flight."""
        self.stop_sending()
        for thread in self._threads:
            thread.join(timeout=60)

    def _client(self) -> None:
        deadline = time.monotonic() + self.limit_s
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                sent = time.monotonic()
                try:
                    status: int | str = session.post(
                        f"{self.url}/invocations",
                        data=self.image,
                        headers={"Content-Type": "image/jpeg"},
                        timeout=30,
                    ).status_code
                except requests.RequestException as exc:
                    status = type(exc).__name__
                    time.sleep(0.05)  # a refused connection returns at once: do not spin
                self.answers.append(Answer(sent, time.monotonic(), status))

    def since(self, t0: float) -> list[Answer]:
        """Answers to requests still running at t0 or sent after it."""
        return [a for a in list(self.answers) if a.done >= t0]

    def errors(self, t0: float) -> list[Answer]:
        return [a for a in self.since(t0) if a.status != 200]

    def wait_recovered(self, t0: float, streak: int = 5, timeout: float = 60) -> float | None:
        """Seconds from t0 to the first 200 of `streak` in a row (None: not within timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok, first = 0, t0
            for answer in self.since(t0):
                ok = ok + 1 if answer.status == 200 else 0
                first = answer.done if ok == 1 else first
                if ok >= streak:
                    return first - t0
            time.sleep(0.2)
        return None
