"""The /opt/ml tree `dogbreed local train` lays out per host, and its hyperparameters."""

from __future__ import annotations

import json
import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dogbreed.core.errors import ConfigError, DataError
from dogbreed.core.opt_ml import decode_hyperparameter, encode_hyperparameter
from dogbreed.local.opt_ml import (
    check_data,
    host_names,
    hyperparameters,
    parse_hyperparameter,
    write_tree,
)

KEYS = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")).filter(
        lambda c: c != "=" and not c.isspace()
    ),
    min_size=1,
    max_size=40,
)


@given(key=KEYS, value=st.text(max_size=60))
def test_key_value_round_trips_and_the_value_keeps_every_character(key, value):
    assert parse_hyperparameter(f"{key}={value}") == (key, value)


@given(text=st.text(max_size=40).filter(lambda t: "=" not in t))
def test_no_equals_sign_is_refused(text):
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_hyperparameter(text)


@pytest.mark.parametrize("text", ["=3", " epochs=3", "the epochs=3", "a\tb=1"])
def test_empty_or_spaced_keys_are_refused(text):
    with pytest.raises(ConfigError):
        parse_hyperparameter(text)


@given(value=st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.text()))
def test_every_hyperparameter_value_becomes_a_string(value):
    text = encode_hyperparameter(value)
    assert isinstance(text, str)
    assert text == value if isinstance(value, str) else json.loads(text) == value


@given(value=st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans()))
def test_what_the_twins_write_training_reads_back(value):
    """One contract (core.opt_ml): the twins' encoding is the one training decodes."""
    assert decode_hyperparameter(encode_hyperparameter(value)) == value


def test_json_then_pairs_and_pairs_win():
    got = hyperparameters('{"epochs": 3, "arch": "resnet18", "freeze": true}', [("epochs", "5")])
    assert got == {"epochs": "5", "arch": "resnet18", "freeze": "true"}


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '"epochs"'])
def test_bad_json_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--hp-json"):
        hyperparameters(text, [])


def test_host_names_are_sagemakers():
    assert host_names(3) == ["algo-1", "algo-2", "algo-3"]
    with pytest.raises(ConfigError):
        host_names(0)


def test_tree_layout_and_contents(tmp_path):
    hosts = host_names(2)
    root = write_tree(tmp_path / "algo-2", "algo-2", hosts, {"epochs": "2", "lr": "0.01"}, "eth0")
    config = root / "input" / "config"
    assert sorted(p.name for p in config.iterdir()) == [
        "hyperparameters.json",
        "inputdataconfig.json",
        "resourceconfig.json",
    ]
    hps = json.loads((config / "hyperparameters.json").read_text())
    assert hps == {"epochs": "2", "lr": "0.01"}
    assert all(isinstance(v, str) for v in hps.values())
    assert json.loads((config / "resourceconfig.json").read_text()) == {
        "current_host": "algo-2",
        "hosts": ["algo-1", "algo-2"],
        "network_interface_name": "eth0",
    }
    channels = json.loads((config / "inputdataconfig.json").read_text())
    assert channels["training"]["TrainingInputMode"] == "File"
    assert channels["training"]["S3DistributionType"] == "FullyReplicated"
    assert (root / "input" / "data" / "training").is_dir()  # the data's mount point
    for sub in ("model", "output", "checkpoints"):
        mode = (root / sub).stat().st_mode
        assert (root / sub).is_dir() and mode & stat.S_IWOTH


def test_the_tree_is_not_laid_over_an_old_one(tmp_path):
    write_tree(tmp_path / "t", "algo-1", ["algo-1"], {}, "lo")
    with pytest.raises(FileExistsError):
        write_tree(tmp_path / "t", "algo-1", ["algo-1"], {}, "lo")


def test_data_needs_a_train_directory(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        check_data(tmp_path / "missing")
    with pytest.raises(DataError, match="no train/"):
        check_data(tmp_path)
    (tmp_path / "train").mkdir()
    assert check_data(tmp_path) == tmp_path.resolve()
