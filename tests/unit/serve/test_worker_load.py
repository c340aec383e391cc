"""Model-server workers see each other's load and pick their thread count by it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dogbreed.core.serve_settings import ServeSettings
from dogbreed.serve.codec import crowded_threads, model_fn
from dogbreed.serve.worker_load import WorkerLoad

SIBLING = """
import sys
from pathlib import Path
from dogbreed.serve.worker_load import WorkerLoad
load = WorkerLoad(Path(sys.argv[1]))
with load.busy():
    print("busy", flush=True)
    sys.stdin.readline()
print("idle", flush=True)
sys.stdin.readline()
"""


class Sibling:
    """Another worker process: busy until told otherwise, then idle, then gone."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SIBLING, str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "busy"

    def step(self, expect: str | None) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        if expect:
            assert self.proc.stdout.readline().strip() == expect

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def test_busy_siblings_are_seen_and_released(tmp_path):
    me = WorkerLoad(tmp_path)
    assert me.others_busy() == 0
    sibling = Sibling(tmp_path)
    try:
        assert me.others_busy() == 1
        with me.busy():  # my own flag does not count
            assert me.others_busy() == 1
        sibling.step("idle")
        assert me.others_busy() == 0
        with sibling.proc:  # a worker that dies busy or not leaves no lock behind
            sibling.step(None)
        assert sibling.proc.wait(timeout=30) == 0
        assert me.others_busy() == 0
    finally:
        sibling.close()
        me.close()
    assert not me.path.exists()


@pytest.mark.parametrize(
    "workers,threads,share,expected",
    [("1", 2, None, None), ("2", 2, None, 1), ("2", 8, None, 4), ("4", 2, None, 1),
     ("2", 1, None, None), ("2", 2, "0", None)],
)  # fmt: skip
def test_crowded_threads(workers, threads, share, expected):
    env = {"SAGEMAKER_MODEL_SERVER_WORKERS": workers}
    if share is not None:
        env["DOGBREED_SHARE_CORES"] = share
    assert crowded_threads(threads, ServeSettings.read(env)) == expected


def test_crowded_worker_answers_the_same(tiny_model_dir, monkeypatch, tmp_path):
    """With siblings busy the worker runs its one-thread session, and only then: same answers."""
    opts = ServeSettings.read({"DOGBREED_ORT_THREADS": "2"}, workers=2)
    model = model_fn(tiny_model_dir, opts, running=tmp_path)
    used = []
    run = model._run
    monkeypatch.setattr(
        model, "_run", lambda session, batch: used.append(session) or run(session, batch)
    )
    try:
        assert model.crowded_session is not None
        assert model.crowded_session.get_session_options().intra_op_num_threads == 1
        x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
        alone = model.probabilities(x)
        sibling = Sibling(model.load.folder)
        try:
            assert model.load.others_busy() == 1
            crowded = model.probabilities(x)
        finally:
            sibling.close()
        assert used == [model.session, model.crowded_session]
        np.testing.assert_allclose(crowded, alone, atol=1e-5)
    finally:
        model.load.close()
