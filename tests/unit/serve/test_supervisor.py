"""The serving supervisor's decisions, one look at a time (no model server needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from dogbreed.core.errors import ServerError
from dogbreed.serve import supervisor
from dogbreed.serve.supervisor import MAX_RESTARTS, BackendSpec, Supervisor, Tree, drain_then
from dogbreed.serve.worker_load import WorkerLoad

JAVA = SimpleNamespace(pid=10)
PARENT = SimpleNamespace(pid=11)


@pytest.fixture
def watch(monkeypatch) -> Supervisor:
    sup = Supervisor(threading.Event(), worker_timeout_s=20)
    sup.spec = BackendSpec(["python", "worker.py"], {}, "/")
    starts = iter(range(1000, 2000))
    monkeypatch.setattr(BackendSpec, "start", lambda self: next(starts))
    return sup


def test_starting_then_serving_is_quiet(watch):
    assert watch.check(Tree(None, None, 0), 0) is None  # MMS not up yet
    assert watch.check(Tree(JAVA, PARENT, 0), 1) is None  # loading the model
    assert watch.check(Tree(JAVA, PARENT, 2), 5) is None
    assert watch.serving and not watch.restarts


def test_a_front_end_that_goes_is_fatal(watch):
    watch.check(Tree(JAVA, PARENT, 2), 0)
    assert "front end (Java) exited on its own" in watch.check(Tree(None, None, 0), 1)


def test_a_dead_parent_is_restarted_at_most_max_restarts_times(watch):
    watch.check(Tree(JAVA, PARENT, 2), 0)
    for step in range(MAX_RESTARTS + 2):
        assert watch.check(Tree(JAVA, None, 0), 1 + step) is None
    assert len(watch.restarts) == MAX_RESTARTS
    assert watch.restarted == {1000, 1001, 1002}


def test_orphaned_workers_still_serving_get_a_parent_for_the_next_one(watch):
    watch.check(Tree(JAVA, PARENT, 2), 0)
    assert watch.check(Tree(JAVA, None, 2), 1) is None
    assert len(watch.restarts) == 1


def test_no_worker_for_the_timeout_is_fatal_and_a_worker_resets_the_clock(watch):
    watch.check(Tree(JAVA, PARENT, 2), 0)
    assert watch.check(Tree(JAVA, PARENT, 0), 1) is None
    assert watch.check(Tree(JAVA, PARENT, 0), 20) is None
    assert watch.check(Tree(JAVA, PARENT, 1), 20.5) is None  # back: the clock starts over
    assert watch.check(Tree(JAVA, PARENT, 0), 30) is None
    reason = watch.check(Tree(JAVA, PARENT, 0), 50.5)
    assert reason and "no model worker could answer for 20 s" in reason


def test_no_worker_ever_is_fatal_after_the_start_allowance(watch):
    assert watch.check(Tree(JAVA, PARENT, 0), 0) is None
    assert watch.check(Tree(JAVA, PARENT, 0), supervisor.STARTUP_S - 1) is None
    assert "came up" in watch.check(Tree(JAVA, PARENT, 0), supervisor.STARTUP_S + 1)


def test_no_restart_once_the_stop_began(watch):
    watch.check(Tree(JAVA, PARENT, 2), 0)
    watch.stopped.set()
    watch.check(Tree(JAVA, None, 0), 1)
    assert not watch.restarts


def hold_flag(folder, release: threading.Event, held: threading.Event) -> None:
    """A worker in another process in real life; a thread with its own fd here."""
    flag = WorkerLoad(folder)
    with flag.busy():
        held.set()
        release.wait(10)


def test_drain_waits_for_requests_in_flight_then_stops(tmp_path):
    release, held, stopped_at = threading.Event(), threading.Event(), []
    worker = threading.Thread(target=hold_flag, args=(tmp_path, release, held))
    worker.start()
    held.wait(5)
    t0 = time.monotonic()
    drain = drain_then(lambda: stopped_at.append(time.monotonic()), tmp_path, limit_s=10)
    time.sleep(0.6)
    assert not stopped_at  # a request is still running
    release.set()
    drain.join(5)
    worker.join(5)
    assert stopped_at and 0.6 < stopped_at[0] - t0 < 3


def test_drain_is_bounded(tmp_path):
    release, held, stopped = threading.Event(), threading.Event(), []
    threading.Thread(target=hold_flag, args=(tmp_path, release, held), daemon=True).start()
    held.wait(5)
    t0 = time.monotonic()
    drain_then(lambda: stopped.append(time.monotonic() - t0), tmp_path, limit_s=0.5).join(5)
    release.set()
    assert stopped and 0.5 <= stopped[0] < 2


def test_drain_with_nothing_in_flight_stops_at_once(tmp_path):
    stopped = []
    drain_then(lambda: stopped.append(1), tmp_path / "none-yet", limit_s=10).join(5)
    assert stopped == [1]


def test_the_backend_is_found_among_our_children():
    tree = supervisor.look()  # the test process has no model server below it
    assert tree == Tree(None, None, 0)


def test_the_front_end_is_found_among_our_children_within_a_poll():
    # A stand-in whose command line names the front end's main class, as Java's does.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)", supervisor.FRONT_END_MAIN]
    )
    try:
        t0 = time.monotonic()
        assert supervisor.find_front_end(timeout_s=10, poll_s=0.05).pid == child.pid
        assert time.monotonic() - t0 < 5
    finally:
        child.kill()
        child.wait()


def test_no_front_end_is_one_clear_error():
    with pytest.raises(ServerError, match="did not start within 0 s"):
        supervisor.find_front_end(timeout_s=0.2, poll_s=0.05)


def test_sigterm_drains_then_forwards_to_the_front_end_in_place_of_the_toolkit(tmp_path):
    release, held = threading.Event(), threading.Event()
    worker = threading.Thread(target=hold_flag, args=(tmp_path, release, held))
    worker.start()
    held.wait(5)
    front_end = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    toolkit = SimpleNamespace(_add_sigterm_handler=None)
    stopped = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        supervisor.graceful_sigterm(toolkit, stopped, tmp_path, limit_s=10)
        toolkit._add_sigterm_handler(front_end)  # what the toolkit calls once it found MMS
        os.kill(os.getpid(), signal.SIGTERM)  # runs our handler, here on the main thread
        assert stopped.is_set()
        time.sleep(0.5)
        assert front_end.poll() is None  # a request is still in a worker
        release.set()
        assert front_end.wait(timeout=10) == -signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)
        release.set()
        worker.join(5)
        front_end.kill()
        front_end.wait()
