"""The command line: help, bad flags, prediction errors."""

from __future__ import annotations

from support.cli import run_cli


def test_predict_reports_a_bad_image_and_goes_on(trained, e2e_data, tmp_path):
    root, _ = trained
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    good = next((e2e_data / "test").glob("*/*.jpg"))
    proc = run_cli("predict", "--model-dir", root / "model", bad, good)
    assert proc.returncode == 1
    assert "bad.jpg: error: cannot decode image" in proc.stderr
    assert proc.stdout.startswith(f"{good}: ")
