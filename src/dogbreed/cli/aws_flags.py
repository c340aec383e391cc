"""The endpoint flags `aws deploy` and `aws up` share; each help text shows the default
it describes, read from defaults.json (the one place it is written)."""

from __future__ import annotations

import argparse


def _dflt(key: str, section: str = "deploy"):
    """A default of defaults.json, for the help text that describes it."""
    from dogbreed.aws.config import defaults

    return defaults()[section][key]


def endpoint_flags(parser: argparse.ArgumentParser) -> None:
    """What runs the model: the flags `deploy` and `up` share (read by _deploy_options)."""
    parser.add_argument(
        "--instance-type", help="e.g. ml.m5.large; ml.c6i.large (VNNI) runs the int8 model"
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        help=f"instances (a canary needs 2 or more; default {_dflt('instance_count')})",
    )
    parser.add_argument(
        "--serverless",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"a serverless endpoint (default {str(_dflt('serverless')).lower()}): billed per "
        "request, nothing when idle, cold starts. It has "
        "no GPUs, no network isolation, no autoscaling policy (--max-concurrency caps it), no "
        "canary or rollback on alarms (updates are all at once), and takes payloads up to 4 MB "
        "(aws lambda then sets the Lambda's MAX_IMAGE_BYTES to 4194304). SageMaker cannot "
        "turn an instance endpoint serverless",
    )
    parser.add_argument(
        "--memory-mb",
        type=int,
        help=f"serverless memory: 1024-6144 in steps of 1024 (default {_dflt('memory_mb')})",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        help=f"serverless concurrent requests, 1-200 (default {_dflt('max_concurrency')})",
    )
    parser.add_argument(
        "--wait-timeout", type=float, default=1800, help="seconds to wait for InService"
    )


def deploy_flags(deploy: argparse.ArgumentParser) -> None:
    """`aws deploy`: what runs the model, how a new one rolls out, when it rolls back."""
    deploy.add_argument("--image", required=True, help="serve image URI")
    deploy.add_argument("--model-data", required=True, help="s3://.../model.tar.gz")
    endpoint_flags(deploy)
    deploy.add_argument(
        "--canary-percent",
        type=int,
        help="share of the new fleet taking traffic first, 1-50 "
        f"(default {_dflt('canary_percent')})",
    )
    deploy.add_argument(
        "--bake-minutes",
        type=int,
        help="minutes the canary, then the whole new fleet, run under the alarms before the "
        f"next step, 0-60 (default {_dflt('bake_minutes')})",
    )
    deploy.add_argument(
        "--alarm-error-rate",
        type=float,
        help="5XX share of invocations tripping the error alarm, 0-1 "
        f"(default {_dflt('error_rate', 'alarms')})",
    )
    deploy.add_argument(
        "--alarm-latency-ms",
        type=float,
        help="average model latency tripping the latency alarm "
        f"(default {_dflt('latency_ms', 'alarms'):g})",
    )
    async_flags(deploy)


def async_flags(deploy: argparse.ArgumentParser) -> None:
    """`aws deploy`: an asynchronous endpoint, its notifications, data capture."""
    deploy.add_argument(
        "--async",
        dest="asynchronous",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="an asynchronous endpoint (default "
        f"{str(_dflt('async')).lower()}): requests and answers in S3 under N's output "
        "prefix, up to 100 MB and async.timeout_s seconds each, queued by SageMaker; `aws "
        "autoscale` then scales it to zero when idle. Not serverless",
    )
    deploy.add_argument(
        "--notify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --async: SNS topics N-async-success and N-async-error, published to on "
        f"each answer (default {str(_dflt('notify', 'async')).lower()})",
    )
    deploy.add_argument(
        "--capture-percent",
        type=int,
        help="data capture: store this share of requests and answers, 1-100, under N's "
        f"output prefix/capture; 0 for none (default {_dflt('capture_percent')})",
    )


# ---- dispatch: verb -> handler(ctx, args); the aws modules are imported only here ------------
