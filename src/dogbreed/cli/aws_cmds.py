"""`dogbreed aws VERB`: the AWS side of a deployment (boto3 only; no image stack)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: the aws modules load when a verb runs
    from dogbreed.aws.context import Ctx


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def add_aws(sub) -> None:
    aws = sub.add_parser(
        "aws",
        help="create and manage the AWS side (IAM, jobs, endpoint, Lambda)",
        description="Idempotent AWS operations for deployment --name N (every resource name "
        "derives from N). Defaults come from dogbreed-aws.json (or --config); "
        "flags override them. --dry-run prints the API requests instead.",
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
        return p

    verb("iam", "two least-privilege roles: SageMaker execution and Lambda")
    train = verb("train", "CreateTrainingJob with the train image")
    train.add_argument("--image", required=True, help="train image URI")
    train.add_argument("--data", help="s3:// URI of the dataset (training channel)")
    train.add_argument("--output", help="s3:// URI for model artifacts")
    train.add_argument("--instance-type", help="e.g. ml.g5.xlarge")
    train.add_argument("--instance-count", type=int, help="2 or more: one distributed job")
    train.add_argument("--spot", action="store_true", help="managed spot training")
    train.add_argument(
        "--hp",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter (repeatable)",
    )
    train.add_argument("--wait", action="store_true", help="follow the job until it ends")
    train.add_argument("--timeout", type=float, default=86400, help="--wait limit, seconds")
    tune = verb("tune", "CreateHyperParameterTuningJob over lr and batch size (max val_acc)")
    tune.add_argument("--image", required=True, help="train image URI")
    tune.add_argument("--max-jobs", type=int, help="training jobs in all")
    tune.add_argument("--parallel-jobs", type=int, help="training jobs at once")
    deploy = verb("deploy", "model, endpoint config and endpoint (created or updated)")
    deploy.add_argument("--image", required=True, help="serve image URI")
    deploy.add_argument("--model-data", required=True, help="s3://.../model.tar.gz")
    deploy.add_argument(
        "--instance-type", help="e.g. ml.m5.large; ml.c6i.large (VNNI) runs the int8 model"
    )
    deploy.add_argument(
        "--wait-timeout", type=float, default=1800, help="seconds to wait for InService"
    )
    scale = verb("autoscale", "target tracking on invocations per instance")
    scale.add_argument("--min", type=int, help="minimum instances")
    scale.add_argument("--max", type=int, help="maximum instances")
    scale.add_argument("--target", type=float, help="invocations per instance per minute")
    scale.add_argument("--scale-in-cooldown", type=int, help="seconds")
    scale.add_argument("--scale-out-cooldown", type=int, help="seconds")
    lam = verb("lambda", "the Lambda function, version, alias 'live' and concurrency")
    lam.add_argument("--zip", type=Path, help="function zip (default: built on the fly)")
    lam.add_argument("--reserved", type=int, help="reserved concurrency")
    lam.add_argument("--provisioned", type=int, help="provisioned concurrency on 'live'")
    invoke = verb("invoke", "classify an image through the Lambda (or --endpoint)")
    invoke.add_argument("image", type=Path, help="image file")
    invoke.add_argument("--endpoint", action="store_true", help="call the endpoint directly")
    verb("down", "delete what the commands above created for N, and nothing else")
    upload = verb(
        "upload-data", "put a dataset tree in S3 (skips files already there)", needs_name=False
    )
    upload.add_argument("local", type=Path, help="dataset directory")
    upload.add_argument("uri", help="s3://bucket/prefix")


# ---- dispatch: verb -> handler(ctx, args); the aws modules are imported only here ------------


def _iam(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.roles import cmd_iam

    cmd_iam(ctx)


def _train(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.training import TrainOptions, cmd_train

    cmd_train(
        ctx,
        TrainOptions(
            image=args.image,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            spot=args.spot,
            hyperparameters=dict(args.hp),
            wait=args.wait,
            timeout_s=args.timeout,
        ),
    )


def _tune(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.training import TuneOptions, cmd_tune

    cmd_tune(ctx, TuneOptions(args.image, args.max_jobs, args.parallel_jobs))


def _deploy(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.endpoint import DeployOptions, cmd_deploy

    cmd_deploy(
        ctx, DeployOptions(args.image, args.model_data, args.instance_type, args.wait_timeout)
    )


def _autoscale(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.endpoint import ScaleOptions, cmd_autoscale

    cmd_autoscale(
        ctx,
        ScaleOptions(
            min=args.min,
            max=args.max,
            target=args.target,
            scale_in_cooldown=args.scale_in_cooldown,
            scale_out_cooldown=args.scale_out_cooldown,
        ),
    )


def _lambda(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.functions import LambdaOptions, cmd_lambda

    cmd_lambda(ctx, LambdaOptions(args.zip, args.reserved, args.provisioned))


def _invoke(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.functions import InvokeOptions, cmd_invoke

    answer = cmd_invoke(ctx, InvokeOptions(args.image, args.endpoint))
    score = answer["score"]
    shown = f"{score:.3f}" if isinstance(score, int | float) else score
    print(f"{args.image}: {answer['breed']} (index {answer['index']}, p={shown})")


def _down(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.teardown import cmd_down

    cmd_down(ctx)


def _upload_data(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.storage import UploadOptions, cmd_upload_data

    cmd_upload_data(ctx, UploadOptions(args.local, args.uri, progress=sys.stderr.isatty()))


VERBS: dict[str, Callable[[Ctx, argparse.Namespace], None]] = {
    "iam": _iam,
    "train": _train,
    "tune": _tune,
    "deploy": _deploy,
    "autoscale": _autoscale,
    "lambda": _lambda,
    "invoke": _invoke,
    "down": _down,
    "upload-data": _upload_data,
}


def run_aws(args: argparse.Namespace) -> int:
    from dogbreed.aws.config import load_config
    from dogbreed.aws.context import Ctx, Names

    # Flags that override a setting of the config file (None: not given).
    overrides = {key: getattr(args, key, None) for key in ("region", "data", "output")}
    config = load_config(args.config, overrides)
    ctx = Ctx(Names(getattr(args, "name", None) or "-"), config, args.dry_run)
    VERBS[args.verb](ctx, args)
    return 0
