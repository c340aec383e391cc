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
    deploy.add_argument(
        "--image", help="serve image URI (with --model-package: default the version's image)"
    )
    model = deploy.add_mutually_exclusive_group(required=True)
    model.add_argument("--model-data", help="s3://.../model.tar.gz (needs --image)")
    model.add_argument(
        "--model-package",
        metavar="approved|V",
        help="a version of N's model registry (aws register): `approved` for the newest "
        "Approved version, or its number; one not Approved is refused",
    )
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


def transform_flags(parser: argparse.ArgumentParser) -> None:
    """`aws transform`: what it reads, where it writes, what runs it."""
    parser.add_argument(
        "--input",
        required=True,
        metavar="s3://...",
        help="S3 prefix of the images (one an object), or with --jsonlines of JSON Lines "
        "files; it must lie under the setting transform.input, which the execution role reads",
    )
    parser.add_argument(
        "--output",
        dest="job_output",  # not the `output` setting: a place under N's prefix of it
        metavar="s3://...",
        help="where OBJECT.out go, under N's output prefix OUTPUT/N/ (default "
        "OUTPUT/N/transform/<job>)",
    )
    parser.add_argument(
        "--instance-type",
        help=f"e.g. ml.c6i.xlarge (default {_dflt('instance_type', 'transform')})",
    )
    parser.add_argument(
        "--instance-count",
        type=int,
        help=f"instances sharing the objects (default {_dflt('instance_count', 'transform')})",
    )
    parser.add_argument(
        "--jsonlines",
        action="store_true",
        help='input files of JSON Lines ({"image": "<base64>"} a line), split by line and '
        "sent several lines a request (MultiRecord); answers one line each (default: one "
        "image an object, one JSON answer an object)",
    )
    parser.add_argument(
        "--model-data",
        metavar="s3://.../model.tar.gz",
        help="with --image: the model `aws deploy` would make of them (default: the model "
        "N's endpoint runs now)",
    )
    parser.add_argument("--image", help="with --model-data: serve image URI")
    parser.add_argument("--wait", action="store_true", help="follow the job until it ends")
    parser.add_argument("--timeout", type=float, default=86400, help="--wait limit, seconds")
    parser.add_argument(
        "--again",
        action="store_true",
        help="start the next job of this request even though one exists: after a failure, "
        "or for objects added under --input since",
    )


REGISTER_HELP = (
    "a training job's model as a version of N's model registry (the model package group N): "
    "image, model data, metrics; PendingManualApproval unless --approve"
)


def register_flags(register: argparse.ArgumentParser) -> None:
    register.add_argument("--image", required=True, help="serve image URI")
    register.add_argument(
        "--training-job", help="one of N's training jobs (default: the newest Completed one)"
    )
    register.add_argument("--approve", action="store_true", help="register it Approved")
    _adopt(register)


def approve_flags(approve: argparse.ArgumentParser) -> None:
    approve.add_argument("--version", type=int, help="its number (default: the newest)")
    approve.add_argument("--reject", action="store_true", help="reject it instead (needs --reason)")
    approve.add_argument("--reason", help="why: the version's ApprovalDescription")
    _adopt(approve)


def up_registry_flags(up: argparse.ArgumentParser) -> None:
    """`aws up`'s step 4 registers the job's model: how its version is approved and used."""
    up.add_argument(
        "--approve", action="store_true", help="register the job's model version Approved"
    )
    up.add_argument(
        "--deploy-approved",
        action="store_true",
        help="deploy the registry's newest Approved version, not the job's model, while the "
        "job's version is pending",
    )


def _adopt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="take over a same-named model package group that dogbreed did not create for N "
        "(tags it dogbreed:name=N)",
    )


# ---- dispatch: verb -> handler(ctx, args); the aws modules are imported only here ------------
