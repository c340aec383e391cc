"""The endpoint under load while its processes are killed, or while it is told to stop.

The OOM killer, a crash or the platform pick the process, not us: kill -9 one
worker, the workers' parent, every worker process, the Java front end; SIGTERM
as SageMaker and `docker stop` send it. Each test prints what the clients saw.
(A module of its own: the toolkit refuses to start a server beside another one.)
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest

from support.containers import SERVE_IMAGE, image_present
from support.load import Load
from support.servers import start_container, start_native, stop, wait_for_ping

WORKER = "model_service_worker.py"


def processes(pid: int) -> dict[str, list[psutil.Process]]:
    """The server's java front end, workers' parent(s) and workers, by role."""
    roles: dict[str, list[psutil.Process]] = {"java": [], "parent": [], "worker": []}
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            cmd = " ".join(proc.cmdline())
            parent = " ".join(psutil.Process(proc.ppid()).cmdline())
        except psutil.Error:
            continue
        if "java" in cmd.split(" ")[0]:
            roles["java"].append(proc)
        elif WORKER in cmd:
            roles["worker" if WORKER in parent else "parent"].append(proc)
    return roles


def wait_for_workers(pid: int, count: int = 2, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        roles = processes(pid)
        # A worker orphaned by its parent's death goes on serving (and looks like a parent here).
        if roles["parent"] and len(roles["parent"] + roles["worker"]) > count:
            return roles
        time.sleep(0.2)
    raise AssertionError(f"no {count} workers after {timeout} s: {processes(pid)}")


def left_behind(procs: list[psutil.Process]) -> list[int]:
    return [p.pid for p in procs if alive(p)]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # gone between the two questions
        return False


def wait_for_log(log, text: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    return log.read_text()


@pytest.fixture(scope="module")
def image(e2e_data) -> bytes:
    return next(iter(sorted((e2e_data / "test").glob("*/*.jpg")))).read_bytes()


@pytest.mark.parametrize("victim", ["one worker", "the workers' parent", "every worker process"])
def test_killed_workers_come_back_under_load(trained, tmp_path, image, victim):
    url, proc, log = start_native(trained[0] / "model", tmp_path)
    try:
        wait_for_ping(url, proc, log)
        roles = wait_for_workers(proc.pid)
        with Load(url, image) as load:
            time.sleep(2)
            t0 = time.monotonic()
            targets = {
                "one worker": roles["worker"][:1],
                "the workers' parent": roles["parent"],
                "every worker process": roles["parent"] + roles["worker"],
            }[victim]
            for target in targets:
                target.kill()
            recovered = load.wait_recovered(t0, timeout=30)
            time.sleep(1)
        errors = load.errors(t0)
        print(f"kill -9 {victim}: {len(errors)} errors, serving again after {recovered} s")
        # The front end retries a dead worker's socket with back-off (1, 2, 3, 5, 8 s ...)
        assert recovered is not None and recovered < 25, log.read_text()[-3000:]
        assert len(errors) <= 4, errors  # the requests those workers held, no more
        assert proc.poll() is None, log.read_text()[-3000:]
        if victim != "one worker":
            assert "started it again" in wait_for_log(log, "started it again")
        wait_for_workers(proc.pid)  # back to full strength
    finally:
        stop(proc)


def test_a_killed_front_end_ends_serve_with_nothing_left(trained, tmp_path, image):
    url, proc, log = start_native(trained[0] / "model", tmp_path)
    try:
        wait_for_ping(url, proc, log)
        roles = wait_for_workers(proc.pid)
        everyone = [p for group in roles.values() for p in group]
        with Load(url, image) as load:
            time.sleep(1)
            t0 = time.monotonic()
            roles["java"][0].kill()
            code = proc.wait(timeout=30)
            took = time.monotonic() - t0
        print(f"kill -9 java: exit {code} after {took:.1f} s, {len(load.errors(t0))} errors")
        assert code == 9 and took < 10, log.read_text()[-2000:]
        deadline = time.monotonic() + 10
        while left_behind(everyone) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left_behind(everyone)
    finally:
        stop(proc)


def test_no_worker_for_the_timeout_ends_serve_non_zero(trained, tmp_path):
    """Workers that keep dying (restarts spent): exit 9 within the timeout, no lying /ping."""
    timeout_s = 4
    url, proc, log = start_native(
        trained[0] / "model", tmp_path, env={"DOGBREED_WORKER_TIMEOUT_S": str(timeout_s)}
    )
    try:
        wait_for_ping(url, proc, log)
        wait_for_workers(proc.pid)
        time.sleep(1)  # the server has seen its workers serve
        last_kill = time.monotonic()
        deadline = last_kill + 120
        while proc.poll() is None and time.monotonic() < deadline:
            roles = processes(proc.pid)
            for victim in roles["parent"] + roles["worker"]:
                victim.kill()
                last_kill = time.monotonic()
            time.sleep(0.1)
        code = proc.wait(timeout=10)
        took = time.monotonic() - last_kill
        print(f"workers killed as they came back: exit {code}, {took:.1f} s after the last kill")
        assert code == 9, log.read_text()[-3000:]
        assert took < timeout_s + 15  # the wait, then stopping Java and the rest
        assert "no model worker could answer" in log.read_text()
        assert log.read_text().count("started it again") == 3
    finally:
        stop(proc)


def test_sigterm_under_load_finishes_the_requests_taken(trained, tmp_path, image):
    """SageMaker stops routing, then sends SIGTERM: nothing already sent may fail."""
    url, proc, log = start_native(trained[0] / "model", tmp_path)
    try:
        wait_for_ping(url, proc, log)
        wait_for_workers(proc.pid)
        everyone = [p for group in processes(proc.pid).values() for p in group]
        with Load(url, image, clients=4) as load:
            time.sleep(2)
            t0 = time.monotonic()
            load.stop_sending()  # the load balancer routes nothing more, then SIGTERM
            proc.send_signal(signal.SIGTERM)
            load.stop()
            code = proc.wait(timeout=30)
            took = time.monotonic() - t0
        taken = [a for a in load.answers if a.sent < t0 <= a.done]
        print(f"SIGTERM under load: {len(taken)} in flight, exit {code} after {took:.1f} s")
        assert taken and all(a.status == 200 for a in taken), taken
        assert all(a.status == 200 for a in load.answers)
        assert code == 0 and took < 10, log.read_text()[-2000:]
        assert not left_behind(everyone)
    finally:
        stop(proc)


def test_sigterm_with_traffic_that_never_stops_is_bounded(trained, tmp_path, image):
    url, proc, log = start_native(trained[0] / "model", tmp_path, env={"DOGBREED_DRAIN_S": "3"})
    try:
        wait_for_ping(url, proc, log)
        with Load(url, image, clients=4):
            time.sleep(1)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            took = time.monotonic() - t0
        assert code == 0 and 3 <= took < 10, log.read_text()[-2000:]
        assert "still running after 3 s" in log.read_text()
    finally:
        stop(proc)


def test_docker_stop_under_load_finishes_the_requests_taken(trained, tmp_path, image):
    if not image_present(SERVE_IMAGE):
        pytest.skip(f"{SERVE_IMAGE} not built (make build)")
    url, proc, log = start_container(trained[0] / "model", tmp_path)
    try:
        wait_for_ping(url, proc, log)
        with Load(url, image, clients=4) as load:
            time.sleep(2)
            t0 = time.monotonic()
            load.stop_sending()
            proc.container.kill(signal="SIGTERM")  # what docker stop sends first
            load.stop()
            code = proc.wait(timeout=40)
        taken = [a for a in load.answers if a.sent < t0 <= a.done]
        print(f"docker stop under load: {len(taken)} in flight, exit {code}")
        assert taken and all(a.status == 200 for a in load.answers), taken
        assert code == 0, log.read_text()[-2000:]
    finally:
        stop(proc)  # docker rm -f, by id
