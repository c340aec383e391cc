"""Stopping `dogbreed serve` leaves no process behind: SIGTERM (SageMaker, docker stop) or
Ctrl-C. MMS spawns a replacement worker as it goes down; the server must stop that too.

(A module of its own: the toolkit refuses to start a server beside another one.)
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from support.servers import start_native, stop, wait_for_ping


def command(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()[:2]
    except psutil.Error:  # gone since it was listed
        return []


def session_members(sid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


@pytest.mark.parametrize(
    ("how", "exit_codes"),
    [("sigterm", {0}), ("ctrl-c", {130}), ("sigterm-while-starting", {143, 0})],
)
def test_stop_leaves_no_worker_behind(trained, tmp_path, how, exit_codes):
    url, proc, log = start_native(trained[0] / "model", tmp_path)
    try:
        if how == "sigterm-while-starting":
            # As MMS starts, before the toolkit has found it and taken over SIGTERM
            # (143); should the toolkit be quicker, it stops MMS itself (0).
            deadline = time.monotonic() + 60
            while "on port" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
        else:
            wait_for_ping(url, proc, log)  # Java answers /ping before the workers are up
            deadline = time.monotonic() + 60
            while len(session_members(proc.pid)) < 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(session_members(proc.pid)) >= 4  # us, Java, two workers
        if how == "ctrl-c":  # the terminal signals the whole foreground group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) in exit_codes, log.read_text()[-2000:]
        deadline = time.monotonic() + 10
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [command(p) for p in session_members(proc.pid)]
        assert not left, left
    finally:
        stop(proc)  # a backstop only: kills the session if anything is left


def test_a_front_end_that_dies_ends_serve_non_zero(trained, tmp_path):
    """Killed Java (the OOM killer's pick): `serve` must not exit 0 as after a clean stop."""
    url, proc, log = start_native(trained[0] / "model", tmp_path)
    try:
        wait_for_ping(url, proc, log)
        java = [p for p in session_members(proc.pid) if "java" in " ".join(command(p)[:1])]
        assert java, [command(p) for p in session_members(proc.pid)]
        java[0].kill()
        assert proc.wait(timeout=30) == 9, log.read_text()[-2000:]
        assert "exited on its own" in log.read_text()
        deadline = time.monotonic() + 10
        while session_members(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [command(p) for p in session_members(proc.pid)]
    finally:
        stop(proc)


def ours(tmp: Path) -> list[Path]:
    """What is in TMPDIR, less ONNX Runtime's own session-id file (one per TMPDIR, reused)."""
    return [p for p in tmp.iterdir() if p.name != ".ses"]


@pytest.mark.parametrize("quiet", [False, True])
def test_a_server_keeps_its_files_private_and_takes_them_when_it_stops(trained, tmp_path, quiet):
    """One private folder (mode 0700) in TMPDIR while it runs, nothing after; the
    console reads at a glance, and -q leaves warnings only."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    flags = ["-q"] if quiet else []
    url, proc, log = start_native(
        trained[0] / "model", tmp_path, *flags, env={"TMPDIR": str(scratch)}
    )
    try:
        wait_for_ping(url, proc, log)
        folders = ours(scratch)
        assert len(folders) == 1 and folders[0].stat().st_mode & 0o077 == 0, folders
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert not ours(scratch)
        lines = log.read_text().splitlines()
        assert not [line for line in lines if "ERROR" in line or "Traceback" in line], lines
        if quiet:
            assert not [line for line in lines if " INFO " in line or "[INFO" in line], lines
        else:
            assert len(lines) < 30 and any("on port" in line for line in lines), lines
    finally:
        stop(proc)
