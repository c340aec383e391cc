"""The serving supervisor's decisions, one look at a time (no model server needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from dogbreed.serve import supervisor
from dogbreed.serve.server import StopRequests
from dogbreed.serve.supervisor import MAX_RESTARTS, BackendSpec, Supervisor, Tree, drain
from dogbreed.serve.worker_load import WorkerLoad

JAVA = SimpleNamespace(pid=10)
PARENT = SimpleNamespace(pid=11)


@pytest.fixture
def watch(monkeypatch) -> Supervisor:
    sup = Supervisor(worker_timeout_s=20)
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
    watch.stopping = True
    watch.check(Tree(JAVA, None, 0), 1)
    assert not watch.restarts


def hold_flag(folder, release: threading.Event, held: threading.Event) -> None:
    """A worker in another process in real life; a thread with its own fd here."""
    flag = WorkerLoad(folder)
    with flag.busy():
        held.set()
        release.wait(10)


def drain_in_thread(folder, limit_s: float, hurry=lambda: False) -> list[float]:
    """Run drain() beside the test; the list gets the seconds it took once it returns."""
    took: list[float] = []
    t0 = time.monotonic()
    threading.Thread(
        target=lambda: (
            drain(folder, limit_s, hurry) is not None and took.append(time.monotonic() - t0)
        ),
        daemon=True,
    ).start()
    return took


def wait_for(took: list[float], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not took and time.monotonic() < deadline:
        time.sleep(0.02)


def test_drain_waits_for_requests_in_flight_then_returns(tmp_path):
    release, held = threading.Event(), threading.Event()
    worker = threading.Thread(target=hold_flag, args=(tmp_path, release, held))
    worker.start()
    held.wait(5)
    took = drain_in_thread(tmp_path, limit_s=10)
    time.sleep(0.6)
    assert not took  # a request is still running
    release.set()
    wait_for(took)
    worker.join(5)
    assert took and 0.6 < took[0] < 3


def test_drain_is_bounded_and_says_how_many_are_left(tmp_path):
    release, held = threading.Event(), threading.Event()
    threading.Thread(target=hold_flag, args=(tmp_path, release, held), daemon=True).start()
    held.wait(5)
    t0 = time.monotonic()
    assert drain(tmp_path, limit_s=0.5) == 1
    release.set()
    assert 0.5 <= time.monotonic() - t0 < 2


def test_a_second_sigterm_cuts_the_drain_short(tmp_path):
    release, held = threading.Event(), threading.Event()
    threading.Thread(target=hold_flag, args=(tmp_path, release, held), daemon=True).start()
    held.wait(5)
    t0 = time.monotonic()
    assert drain(tmp_path, limit_s=10, hurry=lambda: time.monotonic() - t0 > 0.3) == 1
    release.set()
    assert time.monotonic() - t0 < 2


def test_drain_with_nothing_in_flight_returns_after_the_quiet_period(tmp_path):
    t0 = time.monotonic()
    assert drain(tmp_path / "none-yet", limit_s=10) == 0
    assert supervisor.QUIET_S <= time.monotonic() - t0 < supervisor.QUIET_S + 1


def test_the_tree_below_a_process_without_a_server_is_empty():
    assert supervisor.look(None) == Tree(None, None, 0)


def test_a_front_end_that_exited_counts_as_gone_while_a_zombie():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        java = psutil.Process(child.pid)
        assert supervisor.look(java).front_end == java
        child.kill()
        deadline = time.monotonic() + 5
        while java.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert supervisor.look(java).front_end is None  # not yet reaped, already gone
    finally:
        child.kill()
        child.wait()


def test_sigterm_is_only_counted_the_main_loop_acts_on_it():
    """Installed before Java starts: a SIGTERM at any moment is seen, none kills us outright."""
    previous = signal.getsignal(signal.SIGTERM)
    stops = StopRequests()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while stops.count < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stops.count == 2
    finally:
        stops.restore()
    assert signal.getsignal(signal.SIGTERM) == previous
