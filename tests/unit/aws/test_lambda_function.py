"""The Lambda function ships as one small file: standard library and boto3 only."""

from __future__ import annotations

import subprocess
import zipfile


def test_lambda_zip_is_small_and_standalone(tmp_path):
    proc = subprocess.run(
        ["make", "--no-print-directory", "lambda-zip", f"LAMBDA_ZIP={tmp_path / 'f.zip'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(tmp_path / "f.zip") as zf:
        assert zf.namelist() == ["lambda_function.py"]
        source = zf.read("lambda_function.py").decode()
    assert (tmp_path / "f.zip").stat().st_size < 10_000
    assert "import numpy" not in source and "from dogbreed" not in source
