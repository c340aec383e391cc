"""Which of the model server's workers are busy, shared between worker processes.

multi-model-server runs each worker as its own process, so a worker cannot see
how loaded the machine is. On a few cores that matters: one request alone runs
fastest with every core (ONNX Runtime's intra-op threads), but when every
worker is busy, threads beyond a worker's share of the cores only add
synchronisation and cache traffic (ResNet-50 on 2 cores: 44 ms with 2 threads
alone, 78 ms with 1, 84 ms each with 2 threads when two workers run at once).

Each worker holds an exclusive `flock` on a file of its own while it handles a
request; the others test those locks without blocking. The files live in a
folder the server made for its workers alone, and a lock dies
with its process, so a restarted worker leaves nothing stuck. A stale answer
only costs a little speed, never a wrong result.

The same flags, held for a whole request in a second folder, tell the server
when every taken request is done: how it drains on SIGTERM (supervisor.py).
Both folders are in the server's private runtime folder (mms.Runtime).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def busy_count(folder: Path, skip: Path | None = None) -> int:
    """How many of the folder's flags are held (one per busy worker), `skip` aside."""
    busy = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if skip is not None and entry.path == str(skip):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError:  # a worker removing its file as it exits
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                busy += 1
            finally:
                os.close(fd)
    return busy


class WorkerLoad:
    """This worker's busy flag plus a look at its siblings' flags."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(mode=0o700, exist_ok=True)
        self.path = self.folder / str(os.getpid())
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)

    def others_busy(self) -> int:
        """How many sibling workers are handling a request right now."""
        return busy_count(self.folder, skip=self.path)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark this worker busy for the duration of the block."""
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
