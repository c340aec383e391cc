"""`dogbreed lambda-local` as a local front door: started, read for its address, stopped."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

START_TIMEOUT_S = 60


def start_lambda_local(server: str, log_dir: Path) -> tuple[str, subprocess.Popen]:
    """`dogbreed lambda-local --server SERVER --port 0`: (the page's address, the process)."""
    log = log_dir / "lambda-local.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dogbreed", "lambda-local", "--server", server, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            # Its boto3 must reach its own InvokeEndpoint twin, not an emulator a test aimed at.
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")},
        )
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
    line = proc.stdout.readline() if ready else ""
    if "page at http://127.0.0.1:" not in line:
        stop_lambda_local(proc)
        raise AssertionError(f"no start line: {line!r}\n{log.read_text()[-3000:]}")
    return line.split("page at ")[1].split()[0], proc


def stop_lambda_local(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
