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


@pytest.mark.parametrize(
    "args,message",
    [
        (["classify", "--url", "notaurl", "x.jpg"], "must be an http:// or https:// URL"),
        (["classify", "--url", "http://h:port", "x.jpg"], "is not a valid URL"),
        (["classify", "--url", "http://127.0.0.1:9", "/nonexistent.jpg"], "No such file"),
        (["lambda-local", "--server", "ftp://h", "x.jpg"], "must be an http:// or https://"),
        (["data", "fetch", "--out", "/tmp/never", "--url", "notaurl"], "must be an http://"),
        (["data", "synth", "--out", "/proc/no/such/dir"], "No such file or directory"),
        (["aws", "upload-data", "/tmp", "bucket/prefix"], "s3://"),
        (["train", "--data", "/nonexistent"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_never_a_traceback(args, message):
    proc = run_cli(*args, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode not in (0, None), proc.stderr
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
