"""The command line: help, bad flags, prediction errors."""

from __future__ import annotations

import pytest

from support.cli import run_cli


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["train", "--help"],
        ["data", "synth", "--help"],
        ["data", "fetch", "--help"],
        ["predict", "--help"],
    ],
)
def test_help_explains(args):
    proc = run_cli(*args, check=True)
    assert "usage: dogbreed" in proc.stdout and len(proc.stdout.splitlines()) > 5


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--epoch", "3"], "unrecognized arguments: --epoch"),
        (["fly"], "invalid choice: 'fly'"),
        (["data", "synth"], "the following arguments are required: --out"),
    ],
)
def test_wrong_flag_is_one_line(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "--help" in proc.stderr


def test_predict_on_a_missing_model_dir(tmp_path):
    proc = run_cli("predict", "--model-dir", tmp_path, tmp_path / "x.jpg")
    assert proc.returncode == 4 and "metadata.json is missing" in proc.stderr
    assert "Traceback" not in proc.stderr
