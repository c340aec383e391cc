"""The settings of `dogbreed aws`: defaults.json, the user's file, then flags.

Every value is checked once, here, against the type of its built-in default, so
the commands can index the result freely: a malformed file is a ConfigError that
names the setting, never a KeyError or ValueError later on.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dogbreed.aws.policies import split_s3
from dogbreed.core.errors import ConfigError
from dogbreed.core.settings import parse_bool

CONFIG_FILE = "dogbreed-aws.json"
# Settings that must be s3://bucket/prefix URIs (None allowed where the default is None).
S3_SETTINGS = ("data", "output", "checkpoints", "lambda.s3_input", "transform.input")
# Objects whose keys are the user's own (hyperparameter names): replaced whole, not merged.
FREE_OBJECTS = ("train.hyperparameters",)
# The bucket defaults.json and the shipped dogbreed-aws.json name as a stand-in: a setting
# still naming it has not been edited, and no request may carry it (placeholders()).
PLACEHOLDER_BUCKET = "my-dogbreed-bucket"


def defaults() -> dict[str, Any]:
    """The built-in settings (package data next to this module)."""
    return json.loads((Path(__file__).parent / "defaults.json").read_text())


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> dict:
    """defaults.json, then --config FILE (or ./dogbreed-aws.json), then flags (None: unset)."""
    config = defaults()
    source = path or Path(CONFIG_FILE)
    config = _merge(config, _read_file(path), "", str(source))
    for key, value in (overrides or {}).items():
        if value is not None:
            config = _merge(config, {key: value}, "", f"--{key}")
    for setting in S3_SETTINGS:
        _check_s3(config, setting)
    return config


def config_file(path: Path | None = None) -> Path | None:
    """The settings file load_config reads: --config FILE, else ./dogbreed-aws.json when
    present; None when it reads the built-in defaults alone."""
    if path is not None:
        return path
    return Path(CONFIG_FILE) if Path(CONFIG_FILE).is_file() else None


def setting(config: dict[str, Any], name: str) -> Any:
    """The value of a dotted setting name ("lambda.s3_input")."""
    value: Any = config
    for part in name.split("."):
        value = value[part]
    return value


def placeholders(config: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """The settings among `names` that still name the placeholder bucket."""
    stand_in = f"s3://{PLACEHOLDER_BUCKET}"
    return [
        name
        for name in names
        if isinstance(value := setting(config, name), str)
        and (value == stand_in or value.startswith(f"{stand_in}/"))
    ]


def placeholder_problem(
    found: list[str], path: Path | None, flags: Mapping[str, str], command: str
) -> str:
    """One line: which settings still hold the placeholder, the file to edit and the flags
    that override them (`flags`: setting -> flag of this command)."""
    many = len(found) > 1
    quoted = ", ".join(f"'{name}'" for name in found)
    them = "them" if many else "it"
    where = (
        f"edit {them} in {path}"
        if path
        else f"write {them} into ./{CONFIG_FILE} (or a file given with --config)"
    )
    given = [f"{flags[name]} s3://... for '{name}'" for name in found if name in flags]
    also = f", or pass {' and '.join(given)}" if given else ""
    return (
        f"setting{'s' if many else ''} {quoted} still name{'' if many else 's'} the "
        f"placeholder bucket {PLACEHOLDER_BUCKET}, which {command} would send to AWS: {where} "
        f"with {'s3:// URIs' if many else 'an s3:// URI'} of a bucket of yours{also}"
    )


def digest(obj: Any, n: int = 8) -> str:
    """A short stable hash of a request: equal requests give equal resource names."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:n]


def _read_file(path: Path | None) -> dict[str, Any]:
    candidate = path or Path(CONFIG_FILE)
    if not candidate.is_file():
        if path:
            raise ConfigError(f"config file {path} does not exist")
        return {}
    try:
        user = json.loads(candidate.read_text())
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ConfigError(f"{candidate}: invalid JSON: {exc}") from None
    if not isinstance(user, dict):
        raise ConfigError(f"{candidate}: must hold a JSON object, not {type(user).__name__}")
    return user


def _merge(base: dict[str, Any], user: Mapping[str, Any], prefix: str, source: str) -> dict:
    merged = dict(base)
    for key, value in user.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(f"'{prefix}{k}'" for k in base)
            raise ConfigError(f"{source}: unknown setting '{name}' (known: {known})")
        merged[key] = _coerce(base[key], value, name, source)
    return merged


def _coerce(default: Any, value: Any, name: str, source: str) -> Any:
    """`value` in the type of `default`, or a ConfigError naming the setting."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: setting '{name}' must be {expected}, got {value!r}")

    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise bad("a JSON object")
        if name in FREE_OBJECTS:
            return {str(k): _text(v, bad) for k, v in value.items()}
        return _merge(default, value, f"{name}.", source)
    if isinstance(default, list):
        if not isinstance(value, list):
            raise bad("a JSON list")
        return [_text(v, bad) for v in value]
    if isinstance(default, bool):
        try:
            return value if isinstance(value, bool) else parse_bool(value)
        except ValueError:
            raise bad("true or false") from None
    if isinstance(default, int | float):
        return _number(type(default), value, bad)
    if value is None and default is None:
        return None
    if not isinstance(value, str) or not value:
        raise bad("a non-empty string")
    return value


def _number(kind: type, value: Any, bad) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise bad("a number")
    try:
        number = float(value)
    except ValueError:
        raise bad("a number") from None
    if not math.isfinite(number):
        raise bad("a finite number")
    if kind is int:
        if not number.is_integer():
            raise bad("a whole number")
        return int(number)
    return number


def _text(value: Any, bad) -> str:
    """A scalar as the string SageMaker wants (hyperparameters, categorical values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise bad("a string or number")


def _check_s3(config: dict[str, Any], setting: str) -> None:
    *sections, key = setting.split(".")
    holder = config
    for section in sections:
        holder = holder[section]
    if holder[key] is not None:
        split_s3(holder[key], setting)
