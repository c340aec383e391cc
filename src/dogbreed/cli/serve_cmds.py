"""`dogbreed predict|serve|classify|lambda-local`: the serving side, natively.

Parsers import only the core settings; ONNX Runtime, numpy and Pillow are
imported when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("dogbreed")


def _url(flag: str):
    """An argparse type: an http(s) base URL, or a one-line usage error."""

    def parse(text: str) -> str:
        from dogbreed.core.errors import ConfigError
        from dogbreed.core.settings import http_url

        try:
            return http_url(text, flag)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def add_predict(sub) -> None:
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


def add_serve(sub) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the SageMaker endpoint server on a model directory",
        description="Start multi-model-server with GET /ping and POST /invocations, "
        "watch it (a dead workers' parent is restarted; a dead front end or no worker "
        "exits 9) and drain on SIGTERM. Settings from the environment are listed in the "
        "serving docs.",
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
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only; the serve image "
        "listens on 0.0.0.0, as SageMaker requires). The management API is never on it",
    )
    _add_precision(serve)
    serve.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,  # so that `dogbreed -q serve` counts too
        help="warnings and errors only: no start-up lines, no per-worker log lines",
    )


def add_classify(sub) -> None:
    classify = sub.add_parser(
        "classify",
        help="classify images through a running endpoint server's HTTP API",
        description="POST each image to URL/invocations (as SageMaker's InvokeEndpoint does) "
        "and print the breed.",
    )
    classify.add_argument(
        "--url",
        type=_url("--url"),
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


def add_lambda_local(sub) -> None:
    local = sub.add_parser(
        "lambda-local",
        help="run the Lambda handler here against a model server",
        description="Call the Lambda function's handler for each image, with boto3's "
        "sagemaker-runtime client aimed at a loopback InvokeEndpoint twin that "
        "forwards to the model server at --server: the path a request takes on AWS. "
        "Without images, serve the handler as its function URL would, on 127.0.0.1:--port: "
        "open that address in a browser for the page, or POST an image to it.",
    )
    local.add_argument(
        "--server",
        type=_url("--server"),
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
    local.add_argument(
        "--port", type=int, default=9000, help="port of the local front door (default 9000)"
    )
    local.add_argument("images", nargs="*", type=Path, help="image files (none: serve the page)")


def run_predict(args: argparse.Namespace) -> int:
    from dogbreed.core.errors import ImageError
    from dogbreed.serve.predictor import Predictor

    predictor = Predictor(args.model_dir, precision=args.precision)
    failed = 0
    for path in args.images:
        if not path.is_file():
            failed += 1
            print(f"{path}: error: no such file", file=sys.stderr)
            continue
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


def run_serve(args: argparse.Namespace) -> int:
    from dogbreed.core.serve_settings import ServeSettings
    from dogbreed.serve.server import serve

    opts = ServeSettings.read(
        port=args.port, workers=args.workers, precision=args.precision, host=args.host
    )
    serve(args.model_dir, opts, quiet=args.quiet)
    return 0


def run_classify(args: argparse.Namespace) -> int:
    from dogbreed.serve.client import classify, wait_until_healthy

    if args.wait:
        waited = wait_until_healthy(args.url, args.wait)
        log.info("%s healthy after %.1f s", args.url, waited)
    for path in args.images:
        answer = classify(args.url, path)
        print(f"{path}: {answer['label']} (index {answer['index']}, p={answer['score']:.3f})")
    return 0


def run_lambda_local(args: argparse.Namespace) -> int:
    import base64
    import os

    from dogbreed.aws.invoke_twin import InvokeEndpointGateway
    from dogbreed.core.errors import EndpointError
    from dogbreed.serve.client import wait_until_healthy

    if args.wait:
        wait_until_healthy(args.server, args.wait)

    def log_failure(line: str) -> None:  # the client gets a generic 502: the operator, why
        print(f"lambda-local: {line}", file=sys.stderr, flush=True)

    # Images given: their failure is the command's error; serving: each one is logged.
    on_failure = None if args.images else log_failure
    gateway = InvokeEndpointGateway({args.endpoint_name: args.server}, on_failure=on_failure)
    gateway.start()
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
        if not args.images:
            _serve_front_door(lambda_handler, args)
        for path in args.images:
            event = {"image_base64": base64.b64encode(path.read_bytes()).decode()}
            gateway.last_failure = None
            answer = lambda_handler(event, None)
            if "error" in answer:
                # The handler tells its client only "failed"; the gateway knows why.
                why = gateway.last_failure or f"{answer['statusCode']}: {answer['error']}"
                raise EndpointError(f"{path}: {why}")
            print(
                f"{path}: {answer['breed']} (index {answer['index']}, p={answer['score']:.3f})",
                flush=True,
            )
    finally:
        gateway.shutdown()
    return 0


def _serve_front_door(handler, args: argparse.Namespace) -> None:
    """The handler behind a loopback twin of its function URL, until interrupted."""
    from dogbreed.aws.url_twin import FunctionUrlTwin

    twin = FunctionUrlTwin(handler, args.port)
    print(
        f"lambda-local: page at {twin.url} (POST an image there), endpoint "
        f"{args.endpoint_name} -> {args.server}; Ctrl-C stops",
        flush=True,
    )
    try:
        twin.serve_forever()
    finally:
        twin.server_close()
