"""`dogbreed aws VERB`: the AWS side of a deployment (boto3 only; no image stack). The
command line is aws_parser.py's; each verb here builds its options and calls its module."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from dogbreed.cli.aws_parser import add_aws

if TYPE_CHECKING:  # for annotations only: the aws modules load when a verb runs
    from dogbreed.aws.context import Ctx
    from dogbreed.aws.endpoint import DeployOptions

__all__ = ["VERBS", "add_aws", "aws_context", "run_aws"]


def _iam(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.roles import admin_policy, cmd_iam, operator_policy

    if args.operator_policy or args.admin_policy:
        policy = operator_policy(ctx) if args.operator_policy else admin_policy(ctx)
        print(json.dumps(policy, indent=2))
        return
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


def _deploy_options(
    args: argparse.Namespace, image: str, model_data: str, **rollout
) -> DeployOptions:
    """DeployOptions from endpoint_flags, plus `deploy`'s rollout and alarm settings."""
    from dogbreed.aws.endpoint import DeployOptions

    return DeployOptions(
        image,
        model_data,
        args.instance_type,
        args.wait_timeout,
        instance_count=args.instance_count,
        serverless=args.serverless,
        memory_mb=args.memory_mb,
        max_concurrency=args.max_concurrency,
        **rollout,
    )


def _deploy(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.endpoint import cmd_deploy
    from dogbreed.aws.registry import cmd_deploy_package
    from dogbreed.core.errors import ConfigError

    if args.model_data and not args.image:
        raise ConfigError("--model-data needs --image (the serve image URI)")
    options = _deploy_options(
        args,
        args.image or "",  # with --model-package: the version's, once resolved
        args.model_data or "",
        canary_percent=args.canary_percent,
        bake_minutes=args.bake_minutes,
        error_rate=args.alarm_error_rate,
        latency_ms=args.alarm_latency_ms,
        asynchronous=args.asynchronous,
        notify=args.notify,
        capture_percent=args.capture_percent,
    )
    if args.model_package:
        cmd_deploy_package(ctx, options, args.model_package)
    else:
        cmd_deploy(ctx, options)


def _register(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.registry import RegisterOptions, cmd_register

    cmd_register(ctx, RegisterOptions(args.image, args.training_job, args.approve))


def _approve(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.registry import cmd_approve

    cmd_approve(ctx, args.version, args.reject, args.reason)


def _transform(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.transform import TransformOptions, cmd_transform

    cmd_transform(
        ctx,
        TransformOptions(
            input=args.input,
            output=args.job_output,
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            jsonlines=args.jsonlines,
            model_data=args.model_data,
            image=args.image,
            wait=args.wait,
            timeout_s=args.timeout,
            again=args.again,
        ),
    )


def _autoscale(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.async_ops import cmd_autoscale  # endpoint.py's for other endpoints
    from dogbreed.aws.endpoint import ScaleOptions

    cmd_autoscale(
        ctx,
        ScaleOptions(
            min=args.min,
            max=args.max,
            target=args.target,
            scale_in_cooldown=args.scale_in_cooldown,
            scale_out_cooldown=args.scale_out_cooldown,
        ),
        asynchronous=args.asynchronous,
    )


def _lambda(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.functions import LambdaOptions, cmd_lambda

    cmd_lambda(
        ctx,
        LambdaOptions(
            args.zip, args.reserved, args.provisioned, args.allow_url_fetch, args.public_url
        ),
    )


def _invoke(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.asynchronous import cmd_invoke_async
    from dogbreed.aws.functions import InvokeOptions, cmd_invoke

    if args.asynchronous:
        answer = cmd_invoke_async(ctx, args.image, args.timeout)
        if answer is None:  # a dry run
            return
    else:
        answer = cmd_invoke(ctx, InvokeOptions(args.image, args.endpoint))
    score = answer["score"]
    shown = f"{score:.3f}" if isinstance(score, int | float) else score
    print(f"{args.image}: {answer['breed']} (index {answer['index']}, p={shown})")


def _up(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.endpoint import ScaleOptions
    from dogbreed.aws.functions import LambdaOptions
    from dogbreed.aws.training import TrainOptions
    from dogbreed.aws.up import UpOptions, cmd_up

    train = TrainOptions(
        image=args.image_train,
        instance_type=args.train_instance_type,
        instance_count=args.train_instance_count,
        spot=args.spot,
        hyperparameters=dict(args.hp),
        timeout_s=args.train_timeout,
    )
    deploy = _deploy_options(args, args.image_serve, "")  # model data: the job's, once known
    scale = ScaleOptions(min=args.min, max=args.max)
    function = LambdaOptions(None, args.reserved, args.provisioned, None, args.public_url)
    progress = sys.stderr.isatty()
    registry = {"approve": args.approve, "deploy_approved": args.deploy_approved}
    cmd_up(
        ctx,
        UpOptions(args.source, train, deploy, scale, function, args.retrain, progress, **registry),
    )


def _status(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.status import cmd_status

    cmd_status(ctx, as_json=args.json)


def _down(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.teardown import cmd_down

    cmd_down(ctx, keep_roles=args.keep_roles)


def _upload_data(ctx: Ctx, args: argparse.Namespace) -> None:
    from dogbreed.aws.storage import UploadOptions, cmd_upload_data

    cmd_upload_data(ctx, UploadOptions(args.local, args.uri, progress=sys.stderr.isatty()))


VERBS: dict[str, Callable[[Ctx, argparse.Namespace], None]] = {
    "iam": _iam,
    "train": _train,
    "tune": _tune,
    "deploy": _deploy,
    "transform": _transform,
    "autoscale": _autoscale,
    "lambda": _lambda,
    "invoke": _invoke,
    "register": _register,
    "approve": _approve,
    "up": _up,
    "status": _status,
    "down": _down,
    "upload-data": _upload_data,
}


def aws_context(args: argparse.Namespace) -> Ctx:
    """The context a verb runs in: the settings (file, then flags) and deployment N, both
    checked before any request (preflight: placeholders stop a real run)."""
    from dogbreed.aws import preflight
    from dogbreed.aws.config import load_config
    from dogbreed.aws.context import Ctx, Names

    # Flags that override a setting of the config file (None: not given).
    overrides = {key: getattr(args, key, None) for key in ("region", "data", "output")}
    source = getattr(args, "source", None)  # `aws up --data`: a directory, or the data prefix
    if source and source.startswith("s3://"):
        overrides["data"] = source
    name = getattr(args, "name", None)
    names = Names(name).check() if name is not None else Names("-")  # before any request
    config = load_config(args.config, overrides)
    preflight.check(args, config)
    adopt, verbose = getattr(args, "adopt", False), getattr(args, "verbose", False)
    return Ctx(names, config, args.dry_run, adopt=adopt, verbose=verbose)


def run_aws(args: argparse.Namespace) -> int:
    ctx = aws_context(args)
    if args.dry_run:
        from dogbreed.aws.preflight import open_dry_run

        open_dry_run(ctx, args)
    VERBS[args.verb](ctx, args)
    return 0
