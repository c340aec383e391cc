"""Every setting by name, with its one default: environment variables and training settings.

Environment variables are read through `env_str`/`env_int`/`env_float`, so a
malformed value is a ConfigError naming the variable, never a bare ValueError.
Training settings (`SETTINGS`) are given as flags or as SageMaker
hyperparameters under the same key (spelt with '-'; '_' is accepted too).
The README's settings tables are checked against this module by a test.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dogbreed.core.errors import ConfigError

# ---- environment variables ----------------------------------------------------------------


@dataclass(frozen=True)
class EnvVar:
    """An environment variable we read: its name, default (None: unset) and meaning."""

    name: str
    default: str | None
    help: str


def _vars(*items: EnvVar) -> dict[str, EnvVar]:
    return {v.name: v for v in items}


# SageMaker's own names (set by the platform or its toolkits).
SAGEMAKER_BASE_DIR = "SAGEMAKER_BASE_DIR"
DEFAULT_BASE_DIR = "/opt/ml"
SM_MODEL_DIR = "SM_MODEL_DIR"
SM_OUTPUT_DATA_DIR = "SM_OUTPUT_DATA_DIR"
SM_CHANNEL_PREFIX = "SM_CHANNEL_"
SM_HOSTS = "SM_HOSTS"
SM_CURRENT_HOST = "SM_CURRENT_HOST"
SM_NUM_GPUS = "SM_NUM_GPUS"

# The serving process: the sagemaker-inference toolkit's variables and ours.
BIND_TO_PORT = "SAGEMAKER_BIND_TO_PORT"
MODEL_SERVER_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
MODEL_SERVER_TIMEOUT_SECONDS = "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS"
MODEL_SERVER_VMARGS = "SAGEMAKER_MODEL_SERVER_VMARGS"
MAX_PAYLOAD_MB = "DOGBREED_MAX_PAYLOAD_MB"
# SageMaker Batch Transform sets the job's MaxPayloadInMB here (up to 100).
BATCH_MAX_PAYLOAD_MB = "SAGEMAKER_MAX_PAYLOAD_IN_MB"
MAX_PIXELS = "DOGBREED_MAX_PIXELS"
MAX_REQUEST_PIXELS = "DOGBREED_MAX_REQUEST_PIXELS"
MAX_INSTANCES = "DOGBREED_MAX_INSTANCES"
TOP_K = "DOGBREED_TOP_K"
PRECISION = "DOGBREED_PRECISION"
ORT_THREADS = "DOGBREED_ORT_THREADS"
SHARE_CORES = "DOGBREED_SHARE_CORES"
ORT_SPIN = "DOGBREED_ORT_SPIN"
JOB_QUEUE = "DOGBREED_JOB_QUEUE"
WORKER_TIMEOUT_S = "DOGBREED_WORKER_TIMEOUT_S"
DRAIN_S = "DOGBREED_DRAIN_S"
# Set by the server for its workers (not a user setting): its private folder (mode 0700),
# where each worker marks the request it handles.
RUNTIME_DIR = "DOGBREED_RUNTIME_DIR"

# The front end holds each request's body until a worker takes it: a burst of
# JOB_QUEUE maximum-size requests (50 x 6 MB) must fit its heap and its direct
# buffers (Netty), which an unpooled allocator gives back after the burst.
DEFAULT_VMARGS = (
    "-XX:-UseContainerSupport -Xms32m -Xmx512m -XX:MaxDirectMemorySize=512m "
    "-XX:+UseSerialGC -XX:MaxMetaspaceSize=96m -XX:TieredStopAtLevel=1 "
    "-Dio.netty.allocator.type=unpooled"
)
# 8k x 5k: above any camera photo, far below what would exhaust a worker's memory.
DEFAULT_MAX_PIXELS = 40_000_000
PRECISIONS = ("auto", "fp32", "int8")

SERVE_ENV = _vars(
    EnvVar(BIND_TO_PORT, "8080", "port (also `--port`)"),
    EnvVar(
        MODEL_SERVER_WORKERS,
        None,
        "worker processes (also `--workers`); default 2, fewer where the memory limit "
        "(the container's cgroup, e.g. a 1 GB serverless endpoint) cannot hold two at "
        "their worst-case request",
    ),
    EnvVar(
        MODEL_SERVER_TIMEOUT_SECONDS,
        "60",
        "response timeout in seconds (MMS reads the older `SAGEMAKER_MODEL_SERVER_TIMEOUT` "
        "in minutes)",
    ),
    EnvVar(MAX_PAYLOAD_MB, "6", "request size limit (InvokeEndpoint's own cap), JSON 413 above it"),
    EnvVar(
        BATCH_MAX_PAYLOAD_MB,
        None,
        "set by SageMaker Batch Transform (the job's `MaxPayloadInMB`): the request size limit "
        f"when `{MAX_PAYLOAD_MB}` is not set",
    ),
    EnvVar(
        MAX_PIXELS, str(DEFAULT_MAX_PIXELS), "decompression-bomb guard, checked before decoding"
    ),
    EnvVar(
        MAX_REQUEST_PIXELS,
        "64000000",
        "pixels of all the request's images together, from their headers before decoding "
        "(413 above it)",
    ),
    EnvVar(MAX_INSTANCES, "64", "images per JSON batch"),
    EnvVar(
        JOB_QUEUE,
        "50",
        "requests waiting for a worker; more are answered 503 at once (each waiting request "
        "holds up to the size limit in the front end's memory)",
    ),
    EnvVar(TOP_K, "5", "default `top_k`"),
    EnvVar(
        PRECISION,
        "auto",
        "`fp32`, `int8`, or `auto`: the int8 model where training kept one and the CPU has "
        "int8 dot products (also `--precision`)",
    ),
    EnvVar(ORT_THREADS, None, "ONNX Runtime threads per worker (default: all cores)"),
    EnvVar(
        SHARE_CORES,
        "1",
        "while other workers are busy too, a worker runs on a second ONNX Runtime session with "
        "its share of the cores; `0`: one session, all threads, always",
    ),
    EnvVar(ORT_SPIN, "0", "let idle ONNX Runtime threads spin"),
    EnvVar(
        WORKER_TIMEOUT_S,
        "20",
        "seconds with no model worker able to answer before the server exits non-zero "
        "(a dead workers' parent is restarted first)",
    ),
    EnvVar(
        DRAIN_S,
        "20",
        "on SIGTERM, seconds to let requests already taken finish (SageMaker kills at 30)",
    ),
    EnvVar(MODEL_SERVER_VMARGS, DEFAULT_VMARGS, "JVM flags of the MMS front end"),
)


def precision_choice(given: str | None, env: Mapping[str, str] | None = None) -> str:
    """auto, fp32 or int8: the given value, else $DOGBREED_PRECISION, else auto."""
    precision = (given or env_str(PRECISION, env) or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise ConfigError(f"{PRECISION}={precision!r}: must be one of {', '.join(PRECISIONS)}")
    return precision


# The train image's launcher and the training processes.
HOST_WAIT_S = "DOGBREED_HOST_WAIT_S"
MASTER_PORT = "DOGBREED_MASTER_PORT"
DIST_TIMEOUT = "DOGBREED_DIST_TIMEOUT"
FINAL_WAIT_S = "DOGBREED_FINAL_WAIT_S"

TRAIN_ENV = _vars(
    EnvVar(HOST_WAIT_S, "120", "seconds to wait for every host name to resolve"),
    EnvVar(MASTER_PORT, "29500", "port of the first host's rendezvous (multi-host jobs)"),
    EnvVar(
        DIST_TIMEOUT,
        "90",
        "seconds a collective waits for a peer before the job fails: a host that dies "
        "mid-epoch ends the others within this (raise it when hosts start unevenly)",
    ),
    EnvVar(
        FINAL_WAIT_S,
        "3600",
        "seconds the other hosts wait at the end while the first exports and quantizes the model",
    ),
)

ENV = {**SERVE_ENV, **TRAIN_ENV}


def env_str(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The variable's value, or its one default; an empty value counts as unset."""
    env = os.environ if env is None else env
    value = env.get(name, "").strip()
    return value or ENV[name].default


def env_float(name: str, env: Mapping[str, str] | None = None, minimum: float = 0) -> float:
    raw = env_str(name, env)
    try:
        value = _finite_float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={raw!r}: must be a finite number") from None
    if not value >= minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum:g}")
    return value


def env_int(name: str, env: Mapping[str, str] | None = None, minimum: int = 0) -> int:
    raw = env_str(name, env)
    try:
        number = float(raw)  # type: ignore[arg-type]  # '4e7' is a whole number too
        value = int(number)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}={raw!r}: must be a whole number") from None
    if value != number:
        raise ConfigError(f"{name}={raw!r}: must be a whole number")
    if value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def env_flag(name: str, env: Mapping[str, str] | None = None) -> bool:
    raw = env_str(name, env) or "0"
    try:
        return parse_bool(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r}: must be 1/0 or true/false") from None


def http_url(text: str, what: str) -> str:
    """A user-given http(s) base URL, without its trailing slash; ConfigError otherwise."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text.strip())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"{what} {text!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} {text!r} must be an http:// or https:// URL with a host")
    return text.strip().rstrip("/")


# ---- training settings (flags and hyperparameters) ------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _finite_float(text: str) -> float:
    """float(), refusing inf and NaN: one of them in a learning rate or a timeout only
    shows up much later, as a diverged run or an overflow."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def _non_negative_float(text: str) -> float:
    value = _finite_float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _positive_float(text: str) -> float:
    value = _finite_float(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _fraction(text: str) -> float:
    value = _finite_float(text)
    if not 0 <= value <= 1:
        raise ValueError("must lie between 0 and 1")
    return value


def parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    """One training setting: its parser, default and help (flags and hyperparameters share it)."""

    parse: Callable[[str], Any]
    default: Any
    help: str


# The settings a user may give as a flag or a hyperparameter (key spelt with '-').
SETTINGS: dict[str, Setting] = {
    "arch": Setting(
        str,
        "resnet50",
        "torchvision backbone (resnet18/34/50, mobilenet_v3_large, "
        "efficientnet_b0, or any torchvision classification model)",
    ),
    "weights": Setting(
        str,
        "imagenet",
        "backbone weights: 'imagenet' (torchvision's), 'none' "
        "(random init) or the path of a torchvision state-dict FILE",
    ),
    "epochs": Setting(_positive_int, 10, "number of epochs"),
    "batch-size": Setting(
        _positive_int,
        None,
        "images per batch, per process under DDP (default: 32 on CPU, 256 on a GPU)",
    ),
    "lr": Setting(
        _positive_float,
        None,
        "learning rate of the head, AdamW with a cosine schedule (default: 1e-3 at "
        "batch size 32, scaled by sqrt(batch size / 32))",
    ),
    "backbone-lr-scale": Setting(
        _positive_float, 0.1, "with --unfreeze, backbone learning rate = lr x this"
    ),
    "weight-decay": Setting(_non_negative_float, 1e-4, "AdamW weight decay"),
    "unfreeze": Setting(parse_bool, False, "train the whole network, not only the new head"),
    "workers": Setting(
        _non_negative_int, None, "data-loading processes (default: CPU cores, at most 8)"
    ),
    "device": Setting(_choice("auto", "cpu", "cuda"), "auto", "auto picks cuda when available"),
    "precision": Setting(
        _choice("auto", "bf16", "fp32"),
        "auto",
        "bf16 autocast or fp32; auto: bf16 where the device computes it natively "
        "(CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX), else fp32",
    ),
    "channels-last": Setting(
        parse_bool, True, "run the network in channels-last memory format (faster on GPU and CPU)"
    ),
    "pipeline": Setting(
        _choice("auto", "loader", "device"),
        "auto",
        "data pipeline. loader: Pillow decodes and augments in loader workers; device: "
        "workers read bytes, the training device decodes (nvjpeg on CUDA) and augments; "
        "auto: device on CUDA, loader on CPU",
    ),
    "compile": Setting(
        parse_bool,
        False,
        "torch.compile the network (minutes of compiling first; pays off on GPUs)",
    ),
    "int8": Setting(
        parse_bool,
        True,
        "also write model.int8.onnx: ONNX Runtime static int8 quantisation calibrated on "
        "training images, kept only if its val_acc is within --int8-max-drop of fp32's. "
        "Servers run it on CPUs with int8 dot products (VNNI/AMX/dotprod), ~3x faster",
    ),
    "int8-max-drop": Setting(
        _fraction, 0.01, "largest val_acc loss (a fraction) at which the int8 model is kept"
    ),
    "seed": Setting(int, 0, "random seed (data order, augmentation, head init)"),
    "patience": Setting(
        _non_negative_int,
        0,
        "stop after this many epochs without a better val_acc (0: never stop early)",
    ),
    "max-bad-fraction": Setting(
        _fraction, 0.05, "fail when more than this share of images cannot be decoded"
    ),
    "feature-bank": Setting(
        _choice("auto", "on", "off"),
        "auto",
        "frozen backbone: encode every image once (training images in --views augmented "
        "views) and train the head from those features on the device; auto: on whenever "
        "the backbone is frozen; off: run every image through the backbone every epoch",
    ),
    "views": Setting(
        _positive_int,
        2,
        "feature bank: augmented views (random resized crop + flip) encoded per training "
        "image; each epoch draws one of them per image",
    ),
    "decode-cache": Setting(
        _choice("auto", "on", "off"),
        "auto",
        "device pipeline, backbone training: decode every training image once into a "
        "cache on the device (squashed to a fixed square) and crop, flip and resize whole "
        "batches from it each epoch; auto: on when it fits in half the free device memory",
    ),
}
PATH_SETTINGS = ("data", "model-dir", "output-dir", "checkpoint-dir")


def parse_setting(key: str, raw: Any, source: str) -> Any:
    """Parse one value with its setting's parser; one clear error when it does not fit."""
    setting = SETTINGS[key]
    try:
        return setting.parse(raw if isinstance(raw, str) else json.dumps(raw))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source} '{key}': invalid value {raw!r} ({exc})") from None
