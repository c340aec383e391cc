"""Every setting has one name and one default (core.settings), and the docs agree."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError
from support.cli import run_cli

DOCS = Path(__file__).resolve().parents[3] / "docs"
# The pages whose tables list the environment variables and the training flags.
ENV_PAGES = (DOCS / "serving.md", DOCS / "training.md")
FLAG_PAGE = DOCS / "training.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", re.M)
FLAG_ROW = re.compile(r"^\| (`--[a-z0-9-]+`(?:, `--[a-z0-9-]+`)*) \| ([^|]+) \|", re.M)


def docs_env_rows() -> dict[str, str]:
    return {
        name: default.strip()
        for page in ENV_PAGES
        for name, default in ROW.findall(page.read_text())
    }


def test_every_environment_variable_is_in_the_docs_with_its_default():
    rows = docs_env_rows()
    for name, var in settings.ENV.items():
        assert name in rows, f"docs/serving.md or docs/training.md has no row for {name}"
        if var.default is not None and len(var.default) <= 20:
            assert rows[name] == var.default, f"the docs say {name} defaults to {rows[name]}"


def test_the_docs_document_no_variable_the_code_does_not_read():
    ours = {
        n
        for n in docs_env_rows()
        if n.startswith(("DOGBREED_", "SAGEMAKER_MODEL", "SAGEMAKER_BIND"))
    }
    assert ours <= set(settings.ENV)


def test_every_documented_training_flag_is_a_setting():
    flags = [
        flag.strip("`-")
        for cell, _ in FLAG_ROW.findall(FLAG_PAGE.read_text())
        for flag in cell.split(", ")
    ]
    assert flags, "no training flag table found in docs/training.md"
    assert set(flags) <= set(settings.SETTINGS)


@pytest.mark.parametrize(
    "value,error",
    [("many", "must be a whole number"), ("-3", "at least 1"), ("1.5", "whole number")],
)
def test_malformed_environment_values_are_config_errors(value, error):
    with pytest.raises(ConfigError, match=f"DOGBREED_TOP_K={value!r}.*{error}"):
        settings.env_int(settings.TOP_K, {"DOGBREED_TOP_K": value}, minimum=1)


def test_unset_and_empty_values_take_the_one_default():
    assert settings.env_int(settings.TOP_K, {}) == 5
    assert settings.env_int(settings.TOP_K, {"DOGBREED_TOP_K": " "}) == 5
    assert settings.env_str(settings.BIND_TO_PORT, {}) == "8080"
    assert settings.env_str(settings.MODEL_SERVER_WORKERS, {}) is None  # fitted to memory


@given(st.text(max_size=12))
def test_env_numbers_parse_or_fail_as_config_errors(text):
    env = {settings.MAX_PAYLOAD_MB: text}
    try:
        value = settings.env_float(settings.MAX_PAYLOAD_MB, env)
    except ConfigError as exc:
        assert settings.MAX_PAYLOAD_MB in str(exc)
    else:
        assert value >= 0


@given(st.text(max_size=12))
def test_settings_parse_or_fail_as_config_errors(text):
    for key in settings.SETTINGS:
        try:
            settings.parse_setting(key, text, "hyperparameter")
        except ConfigError as exc:
            assert f"'{key}'" in str(exc)


NON_FINITE = ["inf", "-inf", "nan", "NaN", "Infinity", "1e999"]
# Every setting that holds a float ("lr" has no fixed default: it scales with the batch).
FLOAT_KEYS = ["lr", *(k for k, s in settings.SETTINGS.items() if isinstance(s.default, float))]


def test_the_float_settings_are_the_ones_expected():
    assert set(FLOAT_KEYS) >= {"lr", "weight-decay", "backbone-lr-scale", "int8-max-drop"}


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("text", NON_FINITE)
def test_non_finite_float_settings_are_config_errors(key, text):
    with pytest.raises(ConfigError, match=f"'{key}'.*finite"):
        settings.parse_setting(key, text, "flag")


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_non_finite_json_numbers_are_refused_too(value):
    # hyperparameters.json may hold a bare number: json.loads("Infinity") is inf.
    for key in ("lr", "weight-decay"):
        with pytest.raises(ConfigError, match="finite"):
            settings.parse_setting(key, value, "hyperparameter")


def test_weight_decay_takes_zero_and_refuses_negatives():
    assert settings.parse_setting("weight-decay", "0", "flag") == 0
    assert settings.parse_setting("weight-decay", "1e-4", "flag") == 1e-4
    with pytest.raises(ConfigError, match="negative"):
        settings.parse_setting("weight-decay", "-0.1", "flag")


@pytest.mark.parametrize("text", ["inf", "nan"])
def test_non_finite_environment_numbers_are_config_errors(text):
    with pytest.raises(ConfigError, match=f"{settings.HOST_WAIT_S}.*finite"):
        settings.env_float(settings.HOST_WAIT_S, {settings.HOST_WAIT_S: text})


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_every_float_setting_is_finite_or_refused(number):
    for key in FLOAT_KEYS:
        for raw in (repr(number), number):
            try:
                value = settings.parse_setting(key, raw, "hyperparameter")
            except ConfigError:
                continue
            assert math.isfinite(value)


def test_train_with_an_infinite_learning_rate_is_one_line(tmp_path):
    proc = run_cli("train", "--data", tmp_path, "--lr", "inf", env={"SAGEMAKER_BASE_DIR": ""})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'lr'" in proc.stderr and "finite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_an_infinite_hyperparameter_in_the_job_is_one_line(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text('{"weight-decay": "nan", "lr": "0.001"}')
    proc = run_cli("train", env={"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "'weight-decay'" in proc.stderr and "finite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
