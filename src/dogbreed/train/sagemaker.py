"""The SageMaker training contract, read once: one `Job` describes where we run.

The names and file formats are core/opt_ml.py's (the local twins write the same
tree). On a laptop or an EC2 host none of it
exists: the Job is one local host and the flags say everything. Nothing here
imports torch, so the container's launcher reads the job before starting it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dogbreed.core import settings
from dogbreed.core.errors import ConfigError
from dogbreed.core.opt_ml import (
    CHANNELS_DIR,
    CHECKPOINT_DIR,
    FAILURE_FILE,
    HYPERPARAMETERS_FILE,
    MODEL_DIR,
    OUTPUT_DATA_DIR,
    RESOURCE_CONFIG_FILE,
    base_dir,
    decode_hyperparameter,
)
from dogbreed.core.settings import SETTINGS, parse_setting

# Keys SageMaker, its SDK or a tuning job add that are not ours.
FOREIGN_KEY_PREFIXES = ("sagemaker_", "_")
LOCAL_HOST = "localhost"


def in_sagemaker(env: Mapping[str, str]) -> bool:
    """Whether a SageMaker-style launcher started us (its config file or SM_* variables)."""
    return (base_dir(env) / RESOURCE_CONFIG_FILE).is_file() or settings.SM_CURRENT_HOST in env


def _read_json_object(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return doc


def parse_hyperparameters(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Our settings from SageMaker's hyperparameters, parsed; unknown keys refused."""
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name.startswith(FOREIGN_KEY_PREFIXES):
            continue
        key = name.replace("_", "-")
        if key not in SETTINGS:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(f"unknown hyperparameter '{name}' in {source} (known: {known})")
        values[key] = parse_setting(key, decode_hyperparameter(value), "hyperparameter")
    return values


def _hosts(conf: dict[str, Any] | None, env: Mapping[str, str], path: Path) -> tuple:
    """(hosts, current host, interface name) from resourceconfig.json, SM_HOSTS, or local."""
    if conf is not None:
        hosts, current = conf.get("hosts"), conf.get("current_host")
        interface = conf.get("network_interface_name")
    elif settings.SM_HOSTS in env:
        try:
            hosts = json.loads(env[settings.SM_HOSTS])
        except ValueError:
            raise ConfigError(f"{settings.SM_HOSTS} is not a JSON list of host names") from None
        current, interface = env.get(settings.SM_CURRENT_HOST, "algo-1"), None
    else:
        return (LOCAL_HOST,), LOCAL_HOST, None
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{path}: 'hosts' must be a non-empty list of host names")
    if not isinstance(current, str) or current not in hosts:
        raise ConfigError(f"{path}: current host {current!r} is not in hosts {hosts}")
    if interface is not None and not isinstance(interface, str):
        raise ConfigError(f"{path}: 'network_interface_name' must be a string")
    return tuple(hosts), current, interface


def _channels(base: Path, env: Mapping[str, str]) -> dict[str, Path]:
    """Channel name -> directory, from the /opt/ml tree and SM_CHANNEL_* (which win)."""
    channels: dict[str, Path] = {}
    root = base / CHANNELS_DIR
    if root.is_dir():
        channels.update({p.name: p for p in root.iterdir() if p.is_dir()})
    for name, value in env.items():
        if name.startswith(settings.SM_CHANNEL_PREFIX):
            channels[name[len(settings.SM_CHANNEL_PREFIX) :].lower()] = Path(value)
    return channels


@dataclass(frozen=True)
class Job:
    """This training job as its launcher described it (SageMaker, an SDK's local
    mode, our own `dogbreed local`) or, with none, one local host."""

    base: Path
    sagemaker: bool
    hosts: tuple[str, ...] = (LOCAL_HOST,)
    current_host: str = LOCAL_HOST
    interface: str | None = None  # as resourceconfig.json names it; may not exist here
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # parsed settings
    channels: dict[str, Path] = field(default_factory=dict)
    model_dir: Path | None = None
    output_data_dir: Path | None = None
    checkpoint_dir: Path | None = None

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Job:
        env = os.environ if env is None else env
        base = base_dir(env)
        hp_path = base / HYPERPARAMETERS_FILE
        hyperparameters = parse_hyperparameters(_read_json_object(hp_path) or {}, str(hp_path))
        if not in_sagemaker(env):  # a hand-made tree: its channels and hyperparameters count
            return cls(
                base=base,
                sagemaker=False,
                hyperparameters=hyperparameters,
                channels=_channels(base, env),
            )
        path = base / RESOURCE_CONFIG_FILE
        hosts, current, interface = _hosts(_read_json_object(path), env, path)
        return cls(
            base=base,
            sagemaker=True,
            hosts=hosts,
            current_host=current,
            interface=interface,
            hyperparameters=hyperparameters,
            channels=_channels(base, env),
            model_dir=Path(env.get(settings.SM_MODEL_DIR) or base / MODEL_DIR),
            output_data_dir=Path(env.get(settings.SM_OUTPUT_DATA_DIR) or base / OUTPUT_DATA_DIR),
            checkpoint_dir=base / CHECKPOINT_DIR,
        )

    @property
    def rank(self) -> int:
        """This host's node rank: its position in `hosts` (the first host is the master)."""
        return self.hosts.index(self.current_host)

    @property
    def failure_file(self) -> Path:
        return self.base / FAILURE_FILE


def write_failure(message: str, env: Mapping[str, str] | None = None) -> None:
    """Leave the reason of a failed SageMaker job where SageMaker reads it (first
    1,024 characters shown); nothing outside SageMaker."""
    env = os.environ if env is None else env
    if not in_sagemaker(env):
        return
    path = base_dir(env) / FAILURE_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message + "\n")
    except OSError:
        pass
