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
        # Reported by the command it was given to, with the flag it resembles.
        (
            ["train", "--epoch", "3"],
            "train: error: unrecognized argument --epoch; did you mean --epochs?",
        ),
        (
            ["predict", "--model-dir", "m", "--topk", "3", "x.jpg"],
            "predict: error: unrecognized argument --topk; did you mean --top-k?",
        ),
        (["train", "--data", "d", "stray"], "train: error: unrecognized arguments: stray"),
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


def test_predict_names_a_missing_image_and_answers_the_rest(tiny_model_dir, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "red.jpg")
    proc = run_cli(
        "predict", "--model-dir", tiny_model_dir, tmp_path / "gone.jpg", tmp_path / "red.jpg"
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"{tmp_path / 'gone.jpg'}: error: no such file"
    assert f"{tmp_path / 'red.jpg'}: Red" in proc.stdout


def test_aws_help_shows_the_defaults_of_defaults_json(monkeypatch):
    """A help text reads its default where the default is written, not a copy of it."""
    from dogbreed.aws import config
    from dogbreed.cli.main import build_parser

    changed = config.defaults()
    changed["deploy"]["memory_mb"], changed["alarms"]["latency_ms"] = 3072, 750.0
    monkeypatch.setattr(config, "defaults", lambda: changed)
    text = " ".join(
        build_parser()
        ._subparsers._group_actions[0]
        .choices["aws"]
        ._subparsers._group_actions[0]
        .choices["deploy"]
        .format_help()
        .split()
    )
    assert "steps of 1024 (default 3072)" in text and "latency alarm (default 750)" in text


def test_an_interrupted_command_exits_130_and_ignores_the_next_signal(monkeypatch, capsys):
    """A second Ctrl-C or SIGTERM while it reports and exits must not kill it by signal."""
    import importlib
    import signal

    cli_main = importlib.import_module("dogbreed.cli.main")  # the module, not its main()

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli_main.COMMANDS, "train", (cli_main.COMMANDS["train"][0], interrupted))
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert cli_main.main(["train"]) == 130
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in before)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    assert "dogbreed train: interrupted" in capsys.readouterr().err
