"""The `dogbreed` command: data, train, predict.

Errors the user can fix print one line and exit non-zero; `--help` on every
command explains its flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from dogbreed import __version__
from dogbreed.core.errors import DogbreedError

log = logging.getLogger("dogbreed")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage plus error.

    Abbreviations are off: `--epoch 3` is a typo to report, not `--epochs`.
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_data(sub) -> None:
    data = sub.add_parser(
        "data",
        help="make or download a dataset",
        description="Make a synthetic dataset or download dogImages.",
    )
    verbs = data.add_subparsers(dest="verb", required=True, metavar="{synth,fetch}")
    synth = verbs.add_parser(
        "synth",
        help="write a learnable synthetic dataset",
        description="Write DIR/{train,valid,test}/NNN.Name/*.jpg: class-dependent shapes, "
        "colours and stripes with noise and jitter, split 80/10/10.",
    )
    synth.add_argument("--out", type=Path, required=True, help="output directory")
    synth.add_argument("--classes", type=int, default=5, help="number of classes (default 5)")
    synth.add_argument(
        "--per-class", type=int, default=40, help="images per class over all splits (default 40)"
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    fetch = verbs.add_parser(
        "fetch",
        help="download the 133-breed dogImages set",
        description="Download the dogImages archive (resumable, verified) and unpack it to "
        "DIR/{train,valid,test}.",
    )
    fetch.add_argument("--out", type=Path, required=True, help="output directory")
    fetch.add_argument("--url", default=None, help="archive URL (default: the course's copy)")
    fetch.add_argument("--sha256", default=None, help="expected SHA-256 of the archive")
    fetch.add_argument("--keep-archive", action="store_true", help="keep the zip after unpacking")


def _add_train(sub) -> None:
    from dogbreed.core.settings import SETTINGS, parse_bool

    train = sub.add_parser(
        "train",
        help="train a classifier (laptop, EC2 or SageMaker)",
        description="Train a breed classifier. Under SageMaker, settings also come from "
        "/opt/ml/input/config/hyperparameters.json and SM_* variables; flags win.",
    )
    paths = train.add_argument_group("paths")
    paths.add_argument(
        "--data",
        default=None,
        help="dataset root holding train/, valid/ and optionally test/ "
        "(SageMaker: the 'training' channel)",
    )
    paths.add_argument(
        "--model-dir",
        default=None,
        help="where model.pth, model.onnx and metadata.json go "
        "(SageMaker: /opt/ml/model; else artifacts/model)",
    )
    paths.add_argument(
        "--output-dir",
        default=None,
        help="metrics, plots and reports (SageMaker: /opt/ml/output/data; else artifacts/output)",
    )
    paths.add_argument(
        "--checkpoint-dir",
        default=None,
        help="per-epoch checkpoints, resumed from on start (SageMaker: "
        "/opt/ml/checkpoints; else artifacts/checkpoints)",
    )
    opts = train.add_argument_group("training")
    for key, setting in SETTINGS.items():
        shown = "" if setting.default is None else f" (default: {setting.default})"
        kwargs = {"default": None, "help": setting.help + shown}
        if setting.parse is parse_bool and setting.default is False:  # an on/off switch
            opts.add_argument(f"--{key}", action="store_const", const=True, **kwargs)
        else:
            opts.add_argument(f"--{key}", type=str, metavar=key.split("-")[-1].upper(), **kwargs)


def _add_predict(sub) -> None:
    predict = sub.add_parser(
        "predict",
        help="classify image files with an exported model",
        description="Run model.onnx from a model directory on images with ONNX Runtime.",
    )
    predict.add_argument("--model-dir", type=Path, required=True, help="a trained model dir")
    predict.add_argument("images", nargs="+", type=Path, help="image files")
    predict.add_argument("--top-k", type=int, default=3, help="classes to show (default 3)")
    predict.add_argument("--json", action="store_true", help="print JSON lines")
    _add_precision(predict)


def _add_precision(parser: argparse.ArgumentParser) -> None:
    from dogbreed.core.settings import PRECISIONS

    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="which model file to run: model.onnx (fp32) or model.int8.onnx; auto: int8 "
        "where training kept one and the CPU has int8 dot products (default "
        "$DOGBREED_PRECISION or auto)",
    )


def _add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the SageMaker endpoint server on a model directory",
        description="Start multi-model-server (via the sagemaker-inference toolkit) with "
        "GET /ping and POST /invocations. Settings from the environment are "
        "listed in the README.",
    )
    serve.add_argument(
        "--model-dir",
        type=Path,
        default=Path("/opt/ml/model"),
        help="model directory written by training (default /opt/ml/model)",
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default $SAGEMAKER_MODEL_SERVER_WORKERS or 2)",
    )
    _add_precision(serve)


def _add_classify(sub) -> None:
    classify = sub.add_parser(
        "classify",
        help="classify images through a running endpoint server's HTTP API",
        description="POST each image to URL/invocations (as SageMaker's InvokeEndpoint does) "
        "and print the breed.",
    )
    classify.add_argument(
        "--url",
        default="http://127.0.0.1:8080",
        help="server base URL (default http://127.0.0.1:8080)",
    )
    classify.add_argument(
        "--wait",
        type=float,
        default=0,
        help="first wait up to this many seconds for GET /ping to answer 200",
    )
    classify.add_argument("images", nargs="+", type=Path, help="image files")


def _add_lambda_local(sub) -> None:
    local = sub.add_parser(
        "lambda-local",
        help="run the Lambda handler here against a model server",
        description="Call the Lambda function's handler for each image, with boto3's "
        "sagemaker-runtime client aimed at a loopback InvokeEndpoint twin that "
        "forwards to the model server at --server: the path a request takes on AWS.",
    )
    local.add_argument(
        "--server",
        default="http://127.0.0.1:8080",
        help="model server base URL (default http://127.0.0.1:8080)",
    )
    local.add_argument("--endpoint-name", default="dogbreed-local", help="endpoint name to use")
    local.add_argument(
        "--wait",
        type=float,
        default=0,
        help="first wait up to this many seconds for the server's /ping",
    )
    local.add_argument("images", nargs="+", type=Path, help="image files")


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _add_aws(sub) -> None:
    aws = sub.add_parser(
        "aws",
        help="create and manage the AWS side (IAM, jobs, endpoint, Lambda)",
        description="Idempotent AWS operations for deployment --name N (every resource name "
        "derives from N). Defaults come from dogbreed-aws.json (or --config); "
        "flags override them. --dry-run prints the API requests instead.",
    )
    verbs = aws.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=Parser)

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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dogbreed",
        description="Train a dog-breed classifier and serve it "
        "on SageMaker, EC2 or a laptop with the same code.",
    )
    parser.add_argument("--version", action="version", version=f"dogbreed {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    _add_data(sub)
    _add_train(sub)
    _add_predict(sub)
    _add_serve(sub)
    _add_classify(sub)
    _add_lambda_local(sub)
    _add_aws(sub)
    return parser


def cmd_data(args: argparse.Namespace) -> int:
    if args.verb == "synth":
        from dogbreed.train.synth import synthesize

        counts = synthesize(args.out, args.classes, args.per_class, args.seed)
    else:
        from dogbreed.train.fetch import DEFAULT_URL, fetch

        counts = fetch(
            args.out,
            args.url or DEFAULT_URL,
            args.sha256,
            args.keep_archive,
            progress=sys.stderr.isatty(),
        )
    print(f"{args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items()) + " images")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dogbreed.train import config as environment
    from dogbreed.train.loop import run

    flags = {k.replace("_", "-"): v for k, v in vars(args).items()}
    for key in environment.SETTINGS:
        if isinstance(flags.get(key), str):
            flags[key] = environment.parse_setting(key, flags[key], "flag")
    cfg = environment.resolve(flags)
    run(cfg)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dogbreed.core.errors import ImageError
    from dogbreed.serve.predictor import Predictor

    predictor = Predictor(args.model_dir, precision=args.precision)
    failed = 0
    for path in args.images:
        try:
            answer = predictor.predict_images([path], k=args.top_k)[0]
        except (ImageError, OSError) as exc:
            failed += 1
            print(f"{path}: error: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"image": str(path), **answer}))
        else:
            others = ", ".join(f"{t['label']} {t['score']:.3f}" for t in answer["top_k"][1:])
            print(
                f"{path}: {answer['label']} (index {answer['index']}, p={answer['score']:.3f})"
                + (f"; then {others}" if others else "")
            )
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from dogbreed.serve.server import serve

    serve(args.model_dir, args.port, args.workers, args.precision)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from dogbreed.serve.client import classify, wait_until_healthy

    if args.wait:
        waited = wait_until_healthy(args.url.rstrip("/"), args.wait)
        log.info("%s healthy after %.1f s", args.url, waited)
    for path in args.images:
        answer = classify(args.url.rstrip("/"), path)
        print(f"{path}: {answer['label']} (index {answer['index']}, p={answer['score']:.3f})")
    return 0


def cmd_lambda_local(args: argparse.Namespace) -> int:
    import base64
    import os

    from dogbreed.aws.invoke_twin import InvokeEndpointGateway
    from dogbreed.core.errors import EndpointError
    from dogbreed.serve.client import wait_until_healthy

    if args.wait:
        wait_until_healthy(args.server.rstrip("/"), args.wait)
    gateway = InvokeEndpointGateway({args.endpoint_name: args.server}).start()
    os.environ.update(
        {"ENDPOINT_NAME": args.endpoint_name, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": gateway.url}
    )
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(key, value)  # the twin checks no signature
    from dogbreed.aws.lambda_function import lambda_handler

    try:
        for path in args.images:
            event = {"image_base64": base64.b64encode(path.read_bytes()).decode()}
            answer = lambda_handler(event, None)
            if "error" in answer:
                raise EndpointError(f"{path}: {answer['statusCode']}: {answer['error']}")
            print(
                f"{path}: {answer['breed']} (index {answer['index']}, p={answer['score']:.3f})",
                flush=True,
            )
    finally:
        gateway.shutdown()
    return 0


def cmd_aws(args: argparse.Namespace) -> int:
    from dogbreed.aws import ops as awsops

    config = awsops.load_config(args.config)
    if args.region:
        config["region"] = args.region
    for key in ("data", "output"):
        if getattr(args, key, None):
            config[key] = getattr(args, key)
    ctx = awsops.Ctx(awsops.Names(getattr(args, "name", None) or "-"), config, args.dry_run)
    verb = args.verb
    if verb == "iam":
        awsops.cmd_iam(ctx)
    elif verb == "train":
        awsops.cmd_train(
            ctx,
            args.image,
            args.instance_type,
            args.instance_count,
            args.spot,
            dict(args.hp),
            args.wait,
            args.timeout,
        )
    elif verb == "tune":
        awsops.cmd_tune(ctx, args.image, args.max_jobs, args.parallel_jobs)
    elif verb == "deploy":
        awsops.cmd_deploy(ctx, args.image, args.model_data, args.instance_type, args.wait_timeout)
    elif verb == "autoscale":
        a = config["autoscale"]
        pick = lambda flag, key: a[key] if flag is None else flag  # noqa: E731
        awsops.cmd_autoscale(
            ctx,
            pick(args.min, "min"),
            pick(args.max, "max"),
            pick(args.target, "target"),
            pick(args.scale_in_cooldown, "scale_in_cooldown"),
            pick(args.scale_out_cooldown, "scale_out_cooldown"),
        )
    elif verb == "lambda":
        lam = config["lambda"]
        zip_bytes = args.zip.read_bytes() if args.zip else awsops.lambda_zip()
        awsops.cmd_lambda(
            ctx,
            zip_bytes,
            lam["reserved"] if args.reserved is None else args.reserved,
            lam["provisioned"] if args.provisioned is None else args.provisioned,
        )
    elif verb == "invoke":
        answer = awsops.cmd_invoke(ctx, args.image, args.endpoint)
        print(f"{args.image}: {answer['breed']} (index {answer['index']}, p={answer['score']:.3f})")
    elif verb == "down":
        awsops.cmd_down(ctx)
    else:
        awsops.cmd_upload_data(ctx, args.local, args.uri, progress=sys.stderr.isatty())
    return 0


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "classify": cmd_classify,
    "lambda-local": cmd_lambda_local,
    "aws": cmd_aws,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our INFO lines only; libraries (the ONNX exporter above all) speak at WARNING.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    log.setLevel(logging.WARNING if args.quiet else logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except DogbreedError as exc:
        message = f"dogbreed {args.command}: error: {exc}"
        if args.command == "train":
            from dogbreed.train.config import write_failure

            write_failure(str(exc))
        print(message, file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if args.command == "train":  # SageMaker shows this file as the job's failure reason
            from dogbreed.train.config import write_failure

            write_failure(f"{exc.__class__.__name__}: {exc}")
        raise
    except KeyboardInterrupt:
        print(f"dogbreed {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
