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
from dogbreed.errors import DogbreedError

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
    from dogbreed.environment import SETTINGS

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
        if key == "unfreeze":
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
    return parser


def cmd_data(args: argparse.Namespace) -> int:
    if args.verb == "synth":
        from dogbreed.synth import synthesize

        counts = synthesize(args.out, args.classes, args.per_class, args.seed)
    else:
        from dogbreed.fetch import DEFAULT_URL, fetch

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
    from dogbreed import environment
    from dogbreed.train import run

    flags = {k.replace("_", "-"): v for k, v in vars(args).items()}
    for key in environment.SETTINGS:
        if isinstance(flags.get(key), str):
            flags[key] = environment.parse_setting(key, flags[key], "flag")
    cfg = environment.resolve(flags)
    run(cfg)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dogbreed.errors import ImageError
    from dogbreed.predict import Predictor

    predictor = Predictor(args.model_dir)
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
    from dogbreed.serve import serve

    serve(args.model_dir, args.port, args.workers)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from dogbreed.client import classify, wait_until_healthy

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

    from dogbreed.client import EndpointError, wait_until_healthy
    from dogbreed.gateway import InvokeEndpointGateway

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
    from dogbreed.lambda_function import lambda_handler

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


COMMANDS = {
    "data": cmd_data,
    "train": cmd_train,
    "predict": cmd_predict,
    "serve": cmd_serve,
    "classify": cmd_classify,
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
            from dogbreed.environment import write_failure

            write_failure(str(exc))
        print(message, file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if args.command == "train":  # SageMaker shows this file as the job's failure reason
            from dogbreed.environment import write_failure

            write_failure(f"{exc.__class__.__name__}: {exc}")
        raise
    except KeyboardInterrupt:
        print(f"dogbreed {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
