"""`dogbreed aws VERB`'s command line: the verbs, their flags and help texts (argparse
only; the verbs themselves are in aws_cmds.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dogbreed.cli.aws_flags import (
    REGISTER_HELP,
    approve_flags,
    deploy_flags,
    endpoint_flags,
    register_flags,
    transform_flags,
    up_registry_flags,
)


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _adopt_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--adopt",
        action="store_true",
        help="take over same-named resources that dogbreed did not create for N (tags them "
        "dogbreed:name=N); without it such a resource is refused before any change",
    )


def _training_flags(parser) -> None:
    """What `aws train` and `aws up` both take for the training job."""
    parser.add_argument("--spot", action="store_true", help="managed spot training")
    parser.add_argument(
        "--hp",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter (repeatable)",
    )


def add_aws(sub) -> None:
    aws = sub.add_parser(
        "aws",
        help="create and manage the AWS side (IAM, jobs, endpoint, Lambda)",
        description="Idempotent AWS operations for deployment --name N (every resource name "
        "derives from N). Defaults come from dogbreed-aws.json (or --config); "
        "flags override them; a placeholder bucket left there stops a verb before any request. "
        "--dry-run prints the API requests instead.",
    )
    verbs = aws.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=type(aws))

    def verb(name: str, help_text: str, needs_name: bool = True) -> argparse.ArgumentParser:
        p = verbs.add_parser(name, help=help_text, description=help_text)
        if needs_name:
            p.add_argument("--name", required=True, help="deployment name N")
        p.add_argument(
            "--config",
            type=Path,
            default=None,
            help="settings file (default ./dogbreed-aws.json when present)",
        )
        p.add_argument("--region", default=None, help="AWS region (default: configuration)")
        p.add_argument("--dry-run", action="store_true", help="print the API requests only")
        p.add_argument(
            "--verbose", action="store_true", help="a dry run prints an upload's every file"
        )
        return p

    iam = verb("iam", "two least-privilege roles: SageMaker execution and Lambda")
    _adopt_flag(iam)
    printed = iam.add_mutually_exclusive_group()
    printed.add_argument(
        "--operator-policy",
        action="store_true",
        help="print the day-to-day IAM policy (JSON) the person or CI role running these "
        "commands for N needs (no IAM writes: it cannot escalate), and change nothing",
    )
    printed.add_argument(
        "--admin-policy",
        action="store_true",
        help="print the administrator's IAM policy (JSON): creating, changing and deleting "
        "N's two roles (`aws iam`, `aws down` without --keep-roles), and change nothing",
    )
    train = verb("train", "CreateTrainingJob with the train image")
    train.add_argument("--image", required=True, help="train image URI")
    train.add_argument("--data", help="s3:// URI of the dataset (training channel)")
    train.add_argument("--output", help="s3:// URI for model artifacts")
    train.add_argument("--instance-type", help="e.g. ml.g5.xlarge")
    train.add_argument("--instance-count", type=int, help="2 or more: one distributed job")
    _training_flags(train)
    train.add_argument("--wait", action="store_true", help="follow the job until it ends")
    train.add_argument("--timeout", type=float, default=86400, help="--wait limit, seconds")
    tune = verb("tune", "CreateHyperParameterTuningJob over lr and batch size (max val_acc)")
    tune.add_argument("--image", required=True, help="train image URI")
    tune.add_argument("--max-jobs", type=int, help="training jobs in all")
    tune.add_argument("--parallel-jobs", type=int, help="training jobs at once")
    deploy = verb(
        "deploy",
        "model, endpoint config, endpoint (created, or updated blue/green with a canary that "
        "rolls back by itself) and its CloudWatch alarms",
    )
    deploy_flags(deploy)
    _adopt_flag(deploy)
    transform = verb(
        "transform",
        "a SageMaker Batch Transform job over an S3 prefix of images, on the model N's "
        "endpoint runs (or --model-data with --image)",
    )
    transform_flags(transform)
    _adopt_flag(transform)
    scale = verb("autoscale", "target tracking on invocations per instance")
    _adopt_flag(scale)
    scale.add_argument("--min", type=int, help="minimum instances")
    scale.add_argument("--max", type=int, help="maximum instances")
    scale.add_argument("--target", type=float, help="invocations per instance per minute")
    scale.add_argument("--scale-in-cooldown", type=int, help="seconds")
    scale.add_argument("--scale-out-cooldown", type=int, help="seconds")
    scale.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="scale an asynchronous endpoint on its backlog, from --min 0 (found by itself "
        "on an endpoint deployed with --async; --target: requests waiting per instance)",
    )
    lam = verb("lambda", "the Lambda function, version, alias 'live', concurrency and function URL")
    lam.add_argument("--zip", type=Path, help="function zip (default: built on the fly)")
    lam.add_argument("--reserved", type=int, help="reserved concurrency")
    lam.add_argument("--provisioned", type=int, help="provisioned concurrency on 'live'")
    lam.add_argument(
        "--allow-url-fetch",
        action=argparse.BooleanOptionalAction,
        default=None,
        help='let clients send {"url": ...} for the function to fetch (default: the '
        "config's lambda.allow_url_fetch, false)",
    )
    lam.add_argument(
        "--public-url",
        action="store_true",
        help="make the function URL public (AuthType NONE: anyone can call it); "
        "default AWS_IAM, signed requests only",
    )
    _adopt_flag(lam)
    invoke = verb("invoke", "classify an image through the Lambda (or --endpoint)")
    invoke.add_argument("image", type=Path, help="image file")
    invoke.add_argument("--endpoint", action="store_true", help="call the endpoint directly")
    invoke.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="through S3: upload the image to N's async input prefix, InvokeEndpointAsync, "
        "wait for the answer (an endpoint deployed with --async)",
    )
    invoke.add_argument(
        "--timeout", type=float, default=1800, help="--async: seconds to wait for the answer"
    )
    register_flags(verb("register", REGISTER_HELP))
    approve_flags(verb("approve", "approve (or --reject) a version of N's model registry"))
    up = verb("up", UP_HELP)
    _up_args(up)
    _adopt_flag(up)
    status = verb("status", "every resource of N and its state (reads only)")
    status.add_argument("--json", action="store_true", help="JSON instead of a table")
    down = verb(
        "down",
        "delete what the commands above created for N (only resources tagged "
        "dogbreed:name=N), and say what is left",
    )
    down.add_argument(
        "--keep-roles",
        action="store_true",
        help="leave N's two IAM roles (deleting them is the administrator's: the day-to-day "
        "operator policy has no IAM writes)",
    )
    upload = verb(
        "upload-data", "put a dataset tree in S3 (skips files already there)", needs_name=False
    )
    upload.add_argument("local", type=Path, help="dataset directory")
    upload.add_argument("uri", help="s3://bucket/prefix")


UP_HELP = (
    "the whole chain for N, in order: data (uploaded when local), IAM roles, training job "
    "and its wait, model data, endpoint, autoscaling, alarms, Lambda with its concurrency and "
    "function URL; then the endpoint, the front door and the cost an hour. Each step is the "
    "verb's own and idempotent: a rerun goes on where the last one stopped, reusing a "
    "completed training job. Settings not given here come from the config file"
)


def _up_args(up: argparse.ArgumentParser) -> None:
    """`aws up`: the other verbs' main flags, renamed where two verbs share one."""
    up.add_argument(
        "--data",
        dest="source",
        required=True,
        metavar="DIR|s3://...",
        help="the dataset: a local directory (uploaded to the config's data prefix, files "
        "already there skipped) or an s3:// prefix that holds it",
    )
    up.add_argument("--image-train", required=True, help="train image URI")
    up.add_argument("--image-serve", required=True, help="serve image URI")
    up.add_argument(
        "--retrain",
        action="store_true",
        help="when this request's last training job Failed or was Stopped, start a new one "
        "(default: report SageMaker's reason and stop)",
    )
    up_registry_flags(up)
    up.add_argument("--train-instance-type", help="training instance type, e.g. ml.g5.xlarge")
    up.add_argument("--train-instance-count", type=int, help="2 or more: one distributed job")
    _training_flags(up)
    up.add_argument(
        "--train-timeout", type=float, default=86400, help="seconds to wait for the training job"
    )
    endpoint_flags(up)  # serverless: no autoscaling step then
    up.add_argument("--min", type=int, help="autoscaling: minimum instances")
    up.add_argument("--max", type=int, help="autoscaling: maximum instances")
    up.add_argument("--reserved", type=int, help="Lambda reserved concurrency")
    up.add_argument("--provisioned", type=int, help="Lambda provisioned concurrency on 'live'")
    up.add_argument(
        "--public-url",
        action="store_true",
        help="make the function URL public (AuthType NONE); default AWS_IAM",
    )
