"""Settings resolution: SageMaker's files and variables, then flags on top."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dogbreed.core.errors import ConfigError
from dogbreed.train import config as environment
from dogbreed.train.sagemaker import Job, write_failure
from dogbreed.train.synth import synthesize


def opt_ml(
    tmp_path: Path, hyperparameters: dict | None = None, channels=("training",), hosts=("algo-1",)
) -> Path:
    """A fake /opt/ml tree as SageMaker lays it out (all hyperparameter values strings)."""
    base = tmp_path / "opt_ml"
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters or {}))
    (config / "resourceconfig.json").write_text(
        json.dumps(
            {"current_host": hosts[0], "hosts": list(hosts), "network_interface_name": "eth0"}
        )
    )
    (config / "inputdataconfig.json").write_text(
        json.dumps(
            {
                c: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
                for c in channels
            }
        )
    )
    for channel in channels:
        root = base / "input" / "data" / channel
        if channel == "training":
            for split in ("train", "valid", "test"):
                (root / split / "001.A").mkdir(parents=True)
        else:
            (root / "001.A").mkdir(parents=True)
    return base


def test_sagemaker_strings_are_parsed(tmp_path):
    base = opt_ml(
        tmp_path,
        {
            "epochs": "7",
            "batch_size": "64",
            "lr": "0.01",
            "arch": '"resnet18"',
            "unfreeze": "true",
            "weights": "none",
            "sagemaker_program": "train.py",
            "_tuning_objective_metric": "x",
        },
    )
    cfg = environment.resolve({}, Job.read({"SAGEMAKER_BASE_DIR": str(base)}))
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.arch, cfg.unfreeze, cfg.weights) == (
        7,
        64,
        0.01,
        "resnet18",
        True,
        "none",
    )
    assert cfg.sagemaker
    assert cfg.train_dir == base / "input/data/training/train"
    assert cfg.test_dir == base / "input/data/training/test"
    assert (cfg.model_dir, cfg.output_dir, cfg.checkpoint_dir) == (
        base / "model",
        base / "output" / "data",
        base / "checkpoints",
    )


def test_flags_win_over_hyperparameters_and_sm_variables(tmp_path):
    base = opt_ml(tmp_path, {"epochs": "7", "batch-size": "64"})
    env = {"SAGEMAKER_BASE_DIR": str(base), "SM_MODEL_DIR": str(tmp_path / "sm_model")}
    cfg = environment.resolve({"epochs": 2, "model-dir": str(tmp_path / "mine")}, Job.read(env))
    assert cfg.epochs == 2 and cfg.batch_size == 64
    assert cfg.model_dir == tmp_path / "mine"
    assert environment.resolve({}, Job.read(env)).model_dir == tmp_path / "sm_model"


def test_separate_train_valid_test_channels(tmp_path):
    base = opt_ml(tmp_path, channels=("train", "validation", "test"))
    cfg = environment.resolve({}, Job.read({"SAGEMAKER_BASE_DIR": str(base)}))
    assert cfg.train_dir.name == "train" and cfg.valid_dir.name == "validation"
    assert cfg.test_dir.name == "test"


def test_sm_channel_variable_points_at_data(tmp_path):
    synthesize(tmp_path / "elsewhere", classes=2, per_class=3)
    env = {
        "SM_CHANNEL_TRAINING": str(tmp_path / "elsewhere"),
        "SAGEMAKER_BASE_DIR": str(tmp_path / "none"),
    }
    assert environment.resolve({}, Job.read(env)).valid_dir == tmp_path / "elsewhere" / "valid"


@pytest.mark.parametrize(
    "hps,message",
    [
        ({"epochs": "three"}, "hyperparameter 'epochs'"),
        ({"epochs": "0"}, "at least 1"),
        ({"lr": "-1"}, "'lr'"),
        ({"unfreeze": "maybe"}, "true or false"),
        ({"epoch": "3"}, "unknown hyperparameter 'epoch'"),
        ({"device": "tpu"}, "one of auto, cpu, cuda"),
    ],
)
def test_bad_hyperparameters_are_one_clear_error(tmp_path, hps, message):
    base = opt_ml(tmp_path, hps)
    with pytest.raises(ConfigError, match=message):
        environment.resolve({}, Job.read({"SAGEMAKER_BASE_DIR": str(base)}))


def test_missing_split_and_missing_data(tmp_path):
    (tmp_path / "d" / "train" / "001.A").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no 'valid/' folder"):
        environment.resolve({"data": str(tmp_path / "d")}, Job.read({}))
    with pytest.raises(ConfigError, match="pass --data"):
        environment.resolve({}, Job.read({"SAGEMAKER_BASE_DIR": str(tmp_path / "x")}))


def test_laptop_defaults(tmp_path):
    synthesize(tmp_path / "d", classes=2, per_class=3)
    cfg = environment.resolve(
        {"data": str(tmp_path / "d")}, Job.read({"SAGEMAKER_BASE_DIR": str(tmp_path / "x")})
    )
    assert not cfg.sagemaker
    assert cfg.model_dir == Path("artifacts/model") and cfg.arch == "resnet50"
    assert cfg.weights == "imagenet" and not cfg.unfreeze


def test_hosts_and_failure_file(tmp_path):
    base = opt_ml(tmp_path, hosts=("algo-2", "algo-1"))
    env = {"SAGEMAKER_BASE_DIR": str(base)}
    job = Job.read(env)
    assert (job.hosts, job.current_host, job.rank) == (("algo-2", "algo-1"), "algo-2", 0)
    assert job.interface == "eth0"
    write_failure("bad things", env)
    assert (base / "output" / "failure").read_text() == "bad things\n"


def test_a_hand_made_tree_without_resourceconfig_still_gives_its_hyperparameters(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"epochs": "3", "arch": "resnet18"}))
    synthesize(tmp_path / "input" / "data" / "training", classes=2, per_class=3)
    cfg = environment.resolve({}, Job.read({"SAGEMAKER_BASE_DIR": str(tmp_path)}))
    assert (cfg.epochs, cfg.arch, cfg.sagemaker) == (3, "resnet18", False)
