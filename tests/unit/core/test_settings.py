"""Every setting has one name and one default (core.settings), and the README agrees."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError

README = Path(__file__).resolve().parents[3] / "README.md"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \| ([^|]+) \|", re.M)
FLAG_ROW = re.compile(r"^\| (`--[a-z0-9-]+`(?:, `--[a-z0-9-]+`)*) \| ([^|]+) \|", re.M)


def readme_env_rows() -> dict[str, str]:
    return {name: default.strip() for name, default in ROW.findall(README.read_text())}


def test_every_environment_variable_is_in_the_readme_with_its_default():
    rows = readme_env_rows()
    for name, var in settings.ENV.items():
        assert name in rows, f"README has no row for {name}"
        if var.default is not None and len(var.default) <= 20:
            assert rows[name] == var.default, f"README says {name} defaults to {rows[name]}"


def test_the_readme_documents_no_variable_the_code_does_not_read():
    ours = {
        n
        for n in readme_env_rows()
        if n.startswith(("DOGBREED_", "SAGEMAKER_MODEL", "SAGEMAKER_BIND"))
    }
    assert ours <= set(settings.ENV)


def test_every_readme_training_flag_is_a_setting():
    flags = [
        flag.strip("`-")
        for cell, _ in FLAG_ROW.findall(README.read_text())
        for flag in cell.split(", ")
    ]
    assert flags, "no training flag table found in the README"
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
    assert settings.env_str(settings.MODEL_SERVER_WORKERS, {}) == "2"


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
